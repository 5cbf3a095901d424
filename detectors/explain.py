"""One plain sentence per alert, for a marketer: what, where, since when, expected vs observed,
and the slice that explains it. No statistics jargon; numbers rounded the way people say them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from detectors.records import WITHIN, Attribution

DIMENSION_NAMES = {
    "source": "source",
    "platform": "platform",
    "app_version": "app version",
    "library": "library",
    "country": "country",
}

CODE_PHRASES = {
    "unplanned_event": "an event that is not in the plan",
    "missing_required": "a missing required property",
    "wrong_type": "a property of the wrong type",
    "not_nullable": "an empty (null) property",
    "not_in_enum": "a value outside the allowed list",
    "pattern_mismatch": "a badly formatted value",
    "out_of_range": "a value out of range",
    "too_long": "a value that is too long",
    "unplanned_property": "a property that is not in the plan",
    "bad_timestamp": "a bad timestamp",
    "bad_currency": "a bad currency code",
    "missing_identity": "no user or anonymous id",
    "missing_context": "missing context fields",
    "wrong_source": "being sent from the wrong source",
    "deprecated_event": "a deprecated event",
    "pii_detected": "personal data that must not be sent",
}


@dataclass(slots=True)
class Evidence:
    """What an explanation needs to know about an incident (totals over its anomalous windows)."""

    kind: str
    series: dict[str, str]
    started: float  # UTC epoch seconds
    minutes: float  # length of the anomalous period so far
    observed: float  # volume: total count; rates: the numerator total
    expected: float  # volume: total expected count; rates: expected numerator total
    denominator: float = 0.0  # rates: total of the denominator (users / events)
    planned: bool = True
    codes: dict[str, int] = field(default_factory=dict)
    attribution: list[Attribution] = field(default_factory=list)  # only slices worth telling
    ended: float | None = None  # set once the alert is resolved: the sentence is in past tense
    # conversion_up: (kind, start) of a rise of the last step's own events (a spike, or a surge
    # of violations such as being sent from the wrong source): tracking that fires twice
    echo: tuple[str, float] | None = None
    # what a slice test found it by: "repeat" (a business key sent again), "pair:<step>" (the
    # users who did that step did not send it), "gone", "bad", "conversion"; "activity" (active
    # users of a source); "" for the series' own model
    cause: str = ""
    # spike: a conversion into the spiking event that rose with it ("Conversion from A to B")
    inflated: str | None = None


REPEAT_TWICE = 0.6  # a repeated share above this is more than one copy per original


def explain(ev: Evidence) -> str:
    """The sentence for one alert, for every kind."""
    where = _where(ev.series)
    since = _since(ev.started)
    when = f"since {since}" if ev.ended is None else f"from {since} to {_clock(ev.ended)}"
    name = "Active users" if ev.cause == "activity" else _name(ev.series)
    plural = _plural(name)
    if ev.ended is not None:
        is_, has = ("were" if plural else "was"), ""
    else:
        is_, has = ("are" if plural else "is"), ("have " if plural else "has ")
    span = _duration(ev.minutes)
    if ev.kind == "spike" and ev.cause == "repeat":
        # twice: at most one copy per original; more is a loop or a bot sending it again
        again = ev.denominator > 0 and ev.observed > REPEAT_TWICE * ev.denominator
        how, who = (
            ("again and again", "a loop or a bot resends it")
            if again
            else ("twice", "tracking fires it twice")
        )
        return (
            f"{name}{where} {is_} sent {how} {when}: {_count(ev.observed)} of "
            f"{_count(ev.denominator)} events in {span} repeat a business key already received "
            f"(usually {_usual_share(ev.expected, ev.denominator)}): {who}, so "
            "its counts and conversions are inflated"
            + _inflates(ev)
            + _slice(ev.attribution, "repeats")
        )
    if ev.kind in ("spike", "drop"):
        obs, exp = ev.observed, ev.expected
        if ev.kind == "spike":
            if exp <= 0 or obs <= exp:
                how = "above normal"
            elif obs / exp < 1.5:
                how = f"{_percent(obs / exp - 1)} higher than expected"
            else:
                how = f"{_ratio(obs, exp)} higher than expected"
        else:
            share = 1 - obs / exp if exp > 0 else 0.0
            how = f"{_percent(share)} lower than expected" if share > 0 else "below normal"
        text = f"{name}{where} {is_} {how} {when} ({_count(obs)} vs {_about(exp)} in {span})"
        return (
            text
            + _inflates(ev)
            + _slice(ev.attribution, "excess" if ev.kind == "spike" else "shortfall")
        )
    if ev.kind == "disappeared":
        text = f"{name}{where} {has}stopped arriving {when}"
        if ev.cause.startswith("pair:"):
            step = _name({"event": ev.cause[5:]})
            users = _count(ev.denominator)
            text += (
                f": {_count(ev.observed)} of the {users} users who sent {step} sent it next "
                f"in {span} (usually {_usual_share(ev.expected, ev.denominator)})"
            )
        elif ev.observed >= 0.5:
            text += f" (only {_count(ev.observed)} in {span}, {_about(ev.expected)} expected)"
        else:
            text += f" (no events in {span}, {_about(ev.expected)} expected)"
        return text + _slice(ev.attribution, "missing events")
    if ev.kind == "new_event":
        what = "not in the tracking plan" if not ev.planned else "never seen before"
        return (
            f'A new event "{ev.series.get("event", "?")}"{where}, {what}, started arriving at '
            f"{since} ({_count(ev.observed)} events in {span})" + _slice(ev.attribution, "them")
        )
    if ev.kind in ("conversion_up", "conversion_down"):
        rate = ev.observed / ev.denominator if ev.denominator > 0 else 0.0
        verb = "rose" if ev.kind == "conversion_up" else "fell"
        text = (
            f"{describe('conversion', ev.series)} {verb} to {_percent(rate)} "
            f"(usually {_usual_share(ev.expected, ev.denominator)}) {when}: "
            f"{_count(ev.observed)} of {_count(ev.denominator)} users in {span}"
        )
        return text + _echo(ev) + _slice(ev.attribution, "change")
    if ev.kind == "violation_surge":
        rate = ev.observed / ev.denominator if ev.denominator > 0 else 0.0
        text = (
            f"{_percent(rate).capitalize()} of {name} events{where} "
            f"{'broke' if ev.ended is not None else 'break'} the tracking plan {when} "
            f"(usually {_usual_share(ev.expected, ev.denominator)}; "
            f"{_count(ev.observed)} of {_count(ev.denominator)} in {span})"
        )
        if ev.codes:
            top = max(ev.codes, key=lambda c: (ev.codes[c], c))
            text += f", mostly {CODE_PHRASES.get(top, top.replace('_', ' '))}"
        return text + _slice(ev.attribution, "extra violations")
    return f"{ev.kind.replace('_', ' ')} on {ev.series} {when}."


def _plural(name: str) -> bool:
    """Does the series' name take a plural verb ("Home screen views have", "All events are")?"""
    return name.endswith((" views", "All events", "Active users"))


def _about(expected: float) -> str:
    """ "about 590", "under 1" (never "about less than 1")."""
    return "under 1" if 0.0 < expected < 1.0 else f"about {_count(expected)}"


def _usual_share(expected: float, denominator: float) -> str:
    """The usual share in words: "about 31 %", "about 0.4 %", "none" (never "about 0.0 %")."""
    usual = expected / denominator if denominator > 0 else 0.0
    if usual < 0.0005:
        return "none"
    return f"about {_percent(usual)}"


def _inflates(ev: Evidence) -> str:
    """ "; Conversion from A to B rose with it, so ..." when a conversion joined a spike."""
    if ev.inflated is None:
        return ""
    what = ev.inflated[0].lower() + ev.inflated[1:]
    return f"; {what} rose with it, so tracking may be counting it twice"


def _echo(ev: Evidence) -> str:
    """ "; Order Completed itself ... since ...: ..." when the last step rose on its own too."""
    if ev.echo is None or ev.kind != "conversion_up":
        return ""
    kind, started = ev.echo
    what = "broke the tracking plan more often" if kind == "violation_surge" else "jumped"
    return (
        f"; {ev.series.get('to_event', '?')} itself {what} from {_since(started)}, "
        "so tracking may be counting it twice"
    )


def describe(metric: str, series: dict[str, str]) -> str:
    """The series in words, as the sentences name it: "Product page views on web",
    "Conversion from Checkout Started to Order Completed on web", "Plan violations of
    Product List Viewed on ios for app version 5.7.1"."""
    where = _where(series)
    if metric == "conversion":
        within = f" within {series[WITHIN]} minutes" if WITHIN in series else ""
        return (
            f"Conversion from {series.get('from_event', '?')} to "
            f"{series.get('to_event', '?')}{within}{where}"
        )
    if metric == "violation":
        return f"Plan violations of {_name(series)}{where}"
    return f"{_name(series)}{where}"


def _name(series: dict[str, str]) -> str:
    """How people call the series' event: "Order Completed", "Home page views"."""
    event = series.get("event")
    if event is None:
        return "All events"
    call, _, name = event.partition(":")
    if name and call in ("page", "screen"):
        return f"{name} {call} views"
    return event


def _where(series: dict[str, str]) -> str:
    parts = []
    source, platform = series.get("source"), series.get("platform")
    if source:
        parts.append(f" on {source}")
    if platform and platform != source:
        parts.append(f" ({platform})" if source else f" on {platform}")
    for dim, value in sorted(series.items()):
        if dim in ("event", "from_event", "to_event", "source", "platform", WITHIN):
            continue
        parts.append(f" for {DIMENSION_NAMES.get(dim, dim.replace('_', ' '))} {value}")
    return "".join(parts)


def _slice(attribution: list[Attribution], what: str) -> str:
    if not attribution:
        return "."
    best = attribution[0]
    verb = "comes" if what in ("excess", "shortfall", "change") else "come"
    target = "them" if what == "them" else f"the {what}"
    text = f"; {_percent(best.share)} of {target} {verb} from {_dim(best)}"
    other = next(
        (a for a in attribution[1:] if a.dimension != best.dimension and a.share >= 0.5), None
    )
    if other is not None:
        text += f" ({_percent(other.share)} from {_dim(other)})"
    return text + "."


def _dim(a: Attribution) -> str:
    return f"{DIMENSION_NAMES.get(a.dimension, a.dimension.replace('_', ' '))} {a.value}"


def _since(ts: float) -> str:
    moment = datetime.fromtimestamp(ts, tz=UTC)
    return moment.strftime("%H:%M UTC on %a %d %b")


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%H:%M UTC")


def _duration(minutes: float) -> str:
    minutes = max(1, round(minutes))
    if minutes < 120:
        return f"{minutes} min"
    hours = minutes / 60
    return f"{hours:.0f} h" if hours >= 10 else f"{hours:.1f} h".replace(".0 h", " h")


def _count(value: float) -> str:
    """Counts the way people say them: 7, 86, 1,240, 12,400, 1.2 million."""
    value = max(0.0, value)
    if value < 10:
        return f"{value:.0f}" if value >= 1 or value == 0 else "less than 1"
    if value < 10_000:
        return f"{round(value):,}"
    if value < 1_000_000:
        return f"{round(value, -2):,.0f}"
    return f"{value / 1_000_000:.1f} million"


def _percent(fraction: float) -> str:
    pct = fraction * 100
    if 0 < pct < 1:
        return f"{pct:.1f} %"
    if 99 < pct < 100:  # not "100 %" for what is not all
        return f"{pct:.1f} %"
    return f"{pct:.0f} %"


def _ratio(obs: float, exp: float) -> str:
    r = obs / exp
    return f"{r:.1f}×" if r < 10 else f"{r:.0f}×"
