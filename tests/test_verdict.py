"""The verdict of `trackwatch explain` (detectors.verdict), on hand-made sums: each rule alone."""

from __future__ import annotations

from datetime import UTC, datetime

from detectors.annotations import Annotation
from detectors.verdict import (
    Cell,
    PeriodData,
    Scope,
    Totals,
    Verdict,
    chosen_shifts,
    compare,
    compare_rate,
    explain_period,
    source_totals,
)

START = datetime(2026, 3, 5, 14, 0, tzinfo=UTC).timestamp()  # a Thursday
END = START + 3600
DAYS = list(range(1, 8))
SOURCES = {"storefront": "web", "ios_app": "ios", "android_app": "android"}


def cell(kind: str, labels: dict[str, str], now: dict, usual: dict, days=DAYS) -> Cell:
    """A series whose shifts 1..n hold `usual` (with a little day-to-day noise), shift 0 `now`."""
    c = Cell(kind, labels)
    c.shifts[0] = Totals(**now)
    for k in days:
        wobble = 1 + 0.03 * ((k % 3) - 1)
        c.shifts[k] = Totals(**{f: v * wobble for f, v in usual.items()})
    return c


def traffic(**changes: dict) -> list[Cell]:
    """A shop: three sources, a funnel, server payments; `changes[(event, source)]` = the
    period's sums of that series (default: as usual)."""
    cells = []
    events = {"Item Viewed": 400, "Checkout Begun": 60, "Order Placed": 40, "page:Item": 300}
    for source, platform in SOURCES.items():
        for event, n in events.items():
            usual = {"count": n, "users": n * 0.8}
            now = changes.get(f"{event}|{source}", usual)
            labels = {"event": event, "source": source, "platform": platform}
            cells.append(cell("volume", labels, now, usual))
        users = {"count": 900, "users": 900, "numerator": 700, "denominator": 900}
        cells.append(
            cell(
                "activity",
                {"source": source, "platform": platform},
                changes.get(f"activity|{source}", users),
                users,
            )
        )
        conv = {"numerator": 40, "denominator": 60}
        labels = {
            "funnel": "purchase",
            "from_event": "Checkout Begun",
            "to_event": "Order Placed",
            "source": source,
            "platform": platform,
        }
        cells.append(cell("conversion", labels, changes.get(f"conv|{source}", conv), conv))
        paid = {"numerator": 39, "denominator": 40}  # the server's payment follows an order
        pair = {
            "funnel": "(companion)",
            "from_event": "Order Placed",
            "to_event": "Payment Captured",
            "source": source,
            "platform": platform,
        }
        cells.append(cell("conversion", pair, paid, paid))
    pay = {"count": 120, "users": 120}
    cells.append(
        cell(
            "volume",
            {"event": "Payment Captured", "source": "backend", "platform": "server"},
            changes.get("server", pay),
            pay,
        )
    )
    return cells


def data(cells: list[Cell], **kwargs) -> PeriodData:
    return PeriodData(START, END, 86400.0, DAYS, cells, **kwargs)


def test_nothing_moved_is_unclear_and_says_so() -> None:
    v = explain_period(data(traffic()), Scope(event="Order Placed", source="storefront"))
    assert v.verdict == "unclear"
    assert "in line with expected" in v.paragraph


def test_repeated_business_keys_are_tracking() -> None:
    doubled = {"count": 80, "users": 32, "repeats": 40}
    v = explain_period(
        data(traffic(**{"Order Placed|storefront": doubled})),
        Scope(event="Order Placed", source="storefront"),
    )
    assert v.verdict == "tracking"
    assert any("repeat a business key" in e.text for e in v.evidence)
    # the server's payments did not double: the server did not see it
    assert any("server" in e.text and e.side == "tracking" for e in v.evidence)


def test_violations_rising_are_tracking() -> None:
    broken = {"count": 0, "users": 0, "violations": 40, "quarantined": 40}
    cells = traffic(**{"Order Placed|android_app": broken})
    cells[0].codes = {}
    v = explain_period(data(cells), Scope(event="Order Placed", source="android_app"))
    assert v.verdict == "tracking"
    assert any("break the tracking plan" in e.text for e in v.evidence)


def test_server_confirming_a_fall_is_a_real_change() -> None:
    # a checkout failing on the web for hours: the web's orders fall by a third, and the
    # server's captured payments by as many (the fixture's 40 orders a source, 120 payments,
    # scaled by 10 so that the server's noise can tell)
    cells = traffic()
    for c in cells:
        for t in c.shifts.values():
            t.count, t.users = 10 * t.count, 10 * t.users
    fewer = {"count": 270, "users": 220}
    changes = {"Order Placed|storefront": fewer, "server": {"count": 1070, "users": 1070}}
    for c in cells:
        key = f"{c.labels.get('event')}|{c.labels.get('source')}"
        if c.labels.get("platform") == "server":
            key = "server"
        if c.kind == "volume" and key in changes:
            c.shifts[0] = Totals(**changes[key])
    v = explain_period(
        data(cells),
        Scope(event="Order Placed", source="storefront"),
    )
    assert v.verdict == "real change", v.evidence
    assert any("server" in e.text for e in v.evidence if e.side == "real change")


def test_an_event_that_stopped_while_the_step_before_went_on_is_tracking() -> None:
    gone = {"count": 0, "users": 0}
    v = explain_period(
        data(
            traffic(
                **{
                    "Order Placed|ios_app": gone,
                    "conv|ios_app": {"numerator": 0, "denominator": 60},
                }
            )
        ),
        Scope(event="Order Placed", source="ios_app"),
    )
    assert v.verdict == "tracking"
    assert any("the step before went on" in e.text for e in v.evidence)


def test_a_new_version_lacking_the_event_is_tracking_without_history() -> None:
    cells = traffic()
    for event, n in {"Item Viewed": 200, "Checkout Begun": 30, "Order Placed": 0}.items():
        labels = {"event": event, "source": "ios_app", "platform": "ios", "app_version": "2.0"}
        cells.append(cell("volume", labels, {"count": n, "users": n}, {}, days=[]))
    for c in cells:
        if c.labels.get("source") == "ios_app" and "app_version" not in c.labels:
            c.labels = {**c.labels, "app_version": "1.9"}
    d = data(cells, first_seen={("ios_app", "2.0"): START - 3600, ("ios_app", "1.9"): 0.0})
    v = explain_period(d, Scope(event="Order Placed", source="ios_app", app_version="2.0"))
    assert v.verdict == "tracking", v.evidence
    assert any("released just before" in e.text for e in v.evidence)
    assert "other versions" in v.baseline


def test_an_annotated_campaign_moving_everything_is_a_real_change() -> None:
    changes = {}
    for source in SOURCES:
        for event, n in {
            "Item Viewed": 400,
            "Checkout Begun": 60,
            "Order Placed": 40,
            "page:Item": 300,
        }.items():
            changes[f"{event}|{source}"] = {"count": 1.8 * n, "users": 1.8 * 0.8 * n}
        changes[f"activity|{source}"] = {
            "count": 1620,
            "users": 1620,
            "numerator": 1260,
            "denominator": 1620,
        }
        changes[f"conv|{source}"] = {"numerator": 72, "denominator": 108}
    changes["server"] = {"count": 216, "users": 216}
    note = Annotation("Spring newsletter", START - 600, END + 600)
    v = explain_period(data(traffic(**changes), annotations=[note]), Scope())
    assert v.verdict == "real change"
    assert any("Spring newsletter" in e.text for e in v.evidence)
    assert any("every source moved together" in e.text for e in v.evidence)


def test_everything_collapsing_with_sessions_cut_is_tracking() -> None:
    changes = {}
    for source in SOURCES:
        for event, n in {
            "Item Viewed": 400,
            "Checkout Begun": 60,
            "Order Placed": 40,
            "page:Item": 300,
        }.items():
            changes[f"{event}|{source}"] = {"count": 0.05 * n, "users": 0.04 * n}
        changes[f"activity|{source}"] = {
            "count": 45,
            "users": 45,
            "numerator": 2,
            "denominator": 45,
        }
    v = explain_period(data(traffic(**changes)), Scope())
    assert v.verdict == "tracking"
    assert any("went silent mid-session" in e.text for e in v.evidence)


def test_an_excess_of_visitors_who_do_nothing_else_is_traffic_quality() -> None:
    flood = {"count": 3000, "users": 2400}
    bots = {"count": 3600, "users": 3600, "numerator": 700, "denominator": 3600}
    v = explain_period(
        data(traffic(**{"page:Item|storefront": flood, "activity|storefront": bots})),
        Scope(event="page:Item", source="storefront"),
    )
    assert v.verdict == "traffic quality", v.evidence


def test_more_users_doing_it_as_usual_with_no_more_visitors_is_not_tracking() -> None:
    more = {}
    for source in SOURCES:
        more[f"Checkout Begun|{source}"] = {"count": 150, "users": 120}
    v = explain_period(data(traffic(**more)), Scope(event="Checkout Begun"))
    assert v.verdict == "real change", v.evidence


def test_thin_evidence_is_unclear_with_how_much_more_data_would_tell() -> None:
    slightly = {"count": 50, "users": 40}
    v = explain_period(
        data(traffic(**{"Order Placed|storefront": slightly})),
        Scope(event="Order Placed", source="storefront"),
    )
    assert v.verdict == "unclear"
    assert "more hours" in v.paragraph


def test_no_history_is_unclear_and_asks_for_a_day() -> None:
    d = PeriodData(START, END, 86400.0, [], traffic())
    v = explain_period(d, Scope(event="Order Placed"))
    assert v.verdict == "unclear"
    assert "one more day of history" in v.paragraph


def test_the_baseline_prefers_the_same_weekday_then_the_same_kind_of_day() -> None:
    shifts, text = chosen_shifts(PeriodData(START, END, 86400.0, list(range(1, 29)), []))
    assert list(shifts) == [7, 14, 21, 28] and "same weekday" in text
    shifts, text = chosen_shifts(PeriodData(START, END, 86400.0, [1, 2, 3, 4, 5, 6], []))
    assert 4 not in shifts and 5 not in shifts  # Sunday 1 Mar and Saturday 28 Feb
    assert "weekdays" in text


def test_to_dict_has_the_band_and_the_evidence() -> None:
    v = explain_period(data(traffic()), Scope(event="Order Placed"))
    out = v.to_dict()
    assert out["lower"] <= out["expected"] <= out["upper"]
    assert {"verdict", "paragraph", "evidence", "baseline", "alerts"} <= out.keys()


def test_a_release_everyone_took_within_hours_is_compared_with_the_sources_past() -> None:
    """No peers left to compare with (forced updates): the source's own past tells."""
    cells = [c for c in traffic() if c.labels.get("source") != "ios_app"]
    for event, n in {"Item Viewed": 400, "Checkout Begun": 60, "Order Placed": 40}.items():
        old = {"event": event, "source": "ios_app", "platform": "ios", "app_version": "1.9"}
        cells.append(cell("volume", old, {"count": 0.02 * n, "users": 0.02 * n}, {"count": n}))
        new = {**old, "app_version": "2.0"}
        now = {"count": 0 if event == "Order Placed" else n, "users": n}
        cells.append(cell("volume", new, now, {}, days=[]))
    d = data(cells, first_seen={("ios_app", "2.0"): START - 7200})
    v = explain_period(d, Scope(event="Order Placed", source="ios_app", app_version="2.0"))
    assert v.verdict == "tracking", v.evidence
    assert any("sends no Order Placed" in e.text for e in v.evidence)


def test_a_server_event_counts_only_when_the_same_users_go_on_to_it() -> None:
    """As many server events by chance is no mirror: the users must go on to it."""
    doubled = {"count": 80, "users": 32, "repeats": 40}
    cells = [
        c
        for c in traffic(**{"Order Placed|storefront": doubled})
        if c.labels.get("to_event") != "Payment Captured"
    ]
    v = explain_period(data(cells), Scope(event="Order Placed", source="storefront"))
    assert v.verdict == "tracking"  # the repeats still tell
    assert not any("server" in e.text for e in v.evidence)


def test_every_source_together_needs_them_to_move_alike() -> None:
    """One source doubling while the others drift up a fifth is not everyone moving."""
    changes = {"Item Viewed|storefront": {"count": 800, "users": 320, "repeats": 400}}
    for source in ("ios_app", "android_app"):  # +20 %: well beyond chance on 400, yet not alike
        changes[f"Item Viewed|{source}"] = {"count": 480, "users": 384}
    v = explain_period(data(traffic(**changes)), Scope(event="Item Viewed", source="storefront"))
    assert not any("every source" in e.text for e in v.evidence)
    assert v.verdict == "tracking"


def _checkout_a_third_less(server: float) -> list[Cell]:
    """The web's checkout turns 27 of 60 users into orders instead of 40 (unscaled: as few as
    a small shop has in hours); the server's captured payments reach `server` (usually 120)."""
    return traffic(
        **{
            "Order Placed|storefront": {"count": 27, "users": 27},
            "conv|storefront": {"numerator": 27, "denominator": 60},
            "server": {"count": server, "users": server},
        }
    )


def test_a_rate_is_judged_by_its_users_and_how_much_it_usually_varies() -> None:
    """27 of 60 where 40 of 60 went on, on seven steady days: beyond binomial noise (the old
    10 % margin on top hid it); the same move where earlier days swung as much is not."""
    conv = {"funnel": "purchase", "from_event": "Checkout Begun", "to_event": "Order Placed"}
    steady = cell(
        "conversion",
        conv,
        {"numerator": 27, "denominator": 60},
        {"numerator": 40, "denominator": 60},
    )
    assert compare_rate([steady], DAYS, "numerator", "denominator").direction == -1
    swinging = Cell("conversion", conv)
    swinging.shifts[0] = Totals(numerator=27, denominator=60)
    for k in DAYS:
        swinging.shifts[k] = Totals(numerator=28 if k % 2 else 52, denominator=60)
    assert compare_rate([swinging], DAYS, "numerator", "denominator").direction == 0


def test_a_funnel_step_falling_with_the_servers_payments_is_a_real_change() -> None:
    v = explain_period(
        data(_checkout_a_third_less(server=107)), Scope(funnel="purchase", source="storefront")
    )
    assert v.verdict == "real change", v.evidence
    assert any("server" in e.text and e.weight == 2 for e in v.evidence if e.side == "real change")


def test_the_server_is_read_for_the_scope_alone_given_the_other_sources() -> None:
    """20 fewer web orders among 120 payments is within the server's own counting noise, but
    the other sources' orders are known: the server's payments less theirs tell the web's."""

    def half_the_orders(server: float) -> list[Cell]:
        return traffic(
            **{
                "Order Placed|storefront": {"count": 20, "users": 20},
                "server": {"count": server, "users": server},
            }
        )

    scope = Scope(event="Order Placed", source="storefront")
    fell = explain_period(data(half_the_orders(server=100)), scope)
    assert fell.verdict == "real change", fell.evidence
    assert any("server" in e.text and e.weight == 2 for e in fell.evidence)
    lost = explain_period(data(half_the_orders(server=120)), scope)
    assert lost.verdict == "tracking", lost.evidence
    assert any("server" in e.text and e.weight == 2 for e in lost.evidence)


def test_a_sparse_event_rising_on_more_than_one_source_is_not_one_trackers_fault() -> None:
    """A leaked code on a small shop: 5 redemptions on the web where 1 is usual, and 3 on the
    apps where about one every other day is: too few for each source's own test, yet the apps
    rising together beyond chance shows the rise is not the web tracker's alone."""
    from detectors.evidence import sources_evidence

    def promo(now: dict[str, float], usual: dict[str, list[float]]) -> list[Cell]:
        cells = []
        for source, platform in SOURCES.items():
            c = Cell("volume", {"event": "Promo", "source": source, "platform": platform})
            c.shifts[0] = Totals(count=now[source], users=now[source])
            for k, n in zip(DAYS[:6], usual[source], strict=True):
                c.shifts[k] = Totals(count=n, users=n)
            cells.append(c)
        return cells

    usual = {
        "storefront": [1, 2, 0, 1, 1, 1],
        "ios_app": [0, 0, 1, 0, 0, 0],
        "android_app": [0, 1, 0, 0, 1, 0],
    }
    scope, shifts = Scope(event="Promo"), DAYS[:6]
    spread = promo({"storefront": 5, "ios_app": 2, "android_app": 1}, usual)
    found = sources_evidence(spread, "Promo", scope, shifts, 1)
    assert [e.side for e in found] == ["real change"], found
    assert "more than one source" in found[0].text
    one = promo({"storefront": 8, "ios_app": 0, "android_app": 1}, usual)
    assert sources_evidence(one, "Promo", scope, shifts, 1) == []


def test_a_step_whose_next_events_the_plan_blocked_is_counted_again_with_them() -> None:
    """Blocked (quarantined) orders never reach the funnel: counted again as if they had
    arrived, the fall splits between them (tracking) and what is still missing (real, when
    beyond chance), each side strong when it holds the larger part. The same blocked orders'
    share breaking the plan is their cause, not a second sign: said as context only."""

    def blocked_orders(went_on: float, blocked: float) -> list[Cell]:
        real = went_on + blocked  # the orders that happened (the server pays each)
        return traffic(
            **{
                "server": {"count": 80 + real, "users": 80 + real},
                "conv|android_app": {"numerator": went_on, "denominator": 60},
                "Order Placed|android_app": {
                    "count": went_on,
                    "users": went_on,
                    "quarantined": blocked,
                    "violations": blocked,
                },
            }
        )

    def side(v: Verdict, words: str) -> str:
        return next(e.side for e in v.evidence if words in e.text)

    scope = Scope(funnel="purchase", source="android_app")
    lost = explain_period(data(blocked_orders(went_on=24, blocked=16)), scope)
    assert lost.verdict == "tracking", lost.evidence
    assert side(lost, "account for the fall") == "tracking"
    assert side(lost, "break the tracking plan") == "context"
    # a real fall of the checkout with a few orders blocked on top: mostly real
    mostly_real = explain_period(data(blocked_orders(went_on=14, blocked=6)), scope)
    assert mostly_real.verdict == "real change", mostly_real.evidence
    assert side(mostly_real, "so that part looks real") == "real change"
    assert "Against that: counting the 6" in mostly_real.paragraph
    # half of the fall blocked, the server's payments confirming the other half: both, said
    both = explain_period(data(blocked_orders(went_on=14, blocked=14)), scope)
    assert both.verdict == "unclear", both.evidence
    assert "there are signs of both" in both.paragraph
    assert "For tracking, counting the 14" in both.paragraph
    # more blocked than the fall (retries blocked too): the server, which counts them, is not
    # read against the step without them ("54 were due" where 40 are usual)
    over = explain_period(data(blocked_orders(went_on=28, blocked=28)), scope)
    assert over.verdict == "tracking", over.evidence
    assert not any("server" in e.text for e in over.evidence), over.evidence
    untouched = explain_period(data(blocked_orders(went_on=24, blocked=0)), scope)
    assert not any("blocked" in e.text for e in untouched.evidence), untouched.evidence


def test_an_event_stopping_on_one_source_while_it_fell_on_the_others_too_is_no_proof() -> None:
    """Item Viewed stops on iOS: alone, the other events going on make it tracking; but when it
    also fell by half on Android beyond chance, the stop may be the end of a fall everywhere
    (a real change of what people do), so it is a hint only and the verdict stays open."""
    scope = Scope(event="Item Viewed", source="ios_app")
    alone = explain_period(
        data(traffic(**{"Item Viewed|ios_app": {"count": 0, "users": 0}})), scope
    )
    assert alone.verdict == "tracking", alone.evidence
    everywhere = explain_period(
        data(
            traffic(
                **{
                    "Item Viewed|ios_app": {"count": 0, "users": 0},
                    "Item Viewed|android_app": {"count": 150, "users": 120},
                }
            )
        ),
        scope,
    )
    assert everywhere.verdict == "unclear", everywhere.evidence
    assert any("fell on other sources too" in e.text for e in everywhere.evidence)


def test_a_sparse_event_sent_by_as_many_more_users_as_events_is_the_usual_visitors() -> None:
    """A code redeemed once by each of 8 users where one in four periods sees one: events per
    user are as usual (one each), so the usual visitors are doing more of it. The usual rate
    per user is a ratio of two small expectations, not one floored at a whole user (which made
    it look as if each user now sent four times as many)."""
    from detectors.evidence import quality_evidence

    cells = traffic()
    promo = cell(
        "volume",
        {"event": "Promo", "source": "storefront", "platform": "web"},
        {"count": 8, "users": 8},
        {"count": 0.25, "users": 0.25},
    )
    scope = Scope(event="Promo")
    found = quality_evidence(
        [*cells, promo],
        source_totals([*cells, promo]),
        [c for c in cells if c.kind == "activity"],
        scope,
        "Promo",
        DAYS,
        compare([promo], DAYS),
    )
    assert [e.side for e in found] == ["real change"], found
    assert "each as often as usual" in found[0].text
