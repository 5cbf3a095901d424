"""Attribution: which dimension values (source, platform, app version, …) explain a deviation.

For every dimension that splits a series, each value's expected part is learnt from normal
windows as an exponentially weighted (EW) baseline:

- volumes: the value's EW share of the series' count, so expected_v = share_v × expected total;
- rates (conversion, violation): the value's EW rate numerator/denominator, so the expected
  numerator is denominator_v × rate_v (the series' expected rate for a value never seen);
- volumes of one source split by a dimension whose mix moves on its own (app versions during a
  rollout): `mix_adjusted` splits the expected count by what each value sends per event of its
  current traffic instead of by its usual share.

The deviation of a value is (observed_v − expected_v) in the direction of the anomaly; values
moving the other way count 0. A value's share is its deviation over the dimension's total, so the
shares of one dimension sum to 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from detectors.records import Attribution

# dimension -> value -> (numerator, denominator); for volumes the denominator is unused (1).
Breakdown = dict[str, dict[str, tuple[float, float]]]


@dataclass(slots=True)
class SliceBaseline:
    """EW numerator/denominator per dimension value. Bounded: at most `max_values` per dimension."""

    alpha: float = 0.02
    max_values: int = 50
    num: dict[str, dict[str, float]] = field(default_factory=dict)
    den: dict[str, dict[str, float]] = field(default_factory=dict)

    def learn(self, breakdown: Breakdown) -> None:
        """Move the baseline toward a window judged normal."""
        for dim, values in breakdown.items():
            nums = self.num.setdefault(dim, {})
            dens = self.den.setdefault(dim, {})
            for value in sorted(set(nums) | set(values)):  # sorted: same sums in every run
                n, d = values.get(value, (0.0, 0.0))
                nums[value] = (1 - self.alpha) * nums.get(value, 0.0) + self.alpha * n
                dens[value] = (1 - self.alpha) * dens.get(value, 0.0) + self.alpha * d
            if len(nums) > self.max_values:
                keep = sorted(nums, key=lambda v: dens[v] + nums[v], reverse=True)
                keep = keep[: self.max_values]
                self.num[dim] = {v: nums[v] for v in keep}
                self.den[dim] = {v: dens[v] for v in keep}

    def share(self, dim: str, value: str) -> float:
        """The value's EW share of the series' volume (0 if never seen)."""
        nums = self.num.get(dim, {})
        total = sum(nums.values())
        return nums.get(value, 0.0) / total if total > 0 else 0.0

    def rate(self, dim: str, value: str, fallback: float) -> float:
        """The value's EW rate, or `fallback` when it has too little history."""
        den = self.den.get(dim, {}).get(value, 0.0)
        if den < 1.0:
            return fallback
        return self.num[dim].get(value, 0.0) / den

    def values(self, dim: str) -> set[str]:
        return set(self.num.get(dim, {}))

    def to_state(self) -> dict:
        return {
            "alpha": self.alpha,
            "max_values": self.max_values,
            "num": self.num,
            "den": self.den,
        }

    @classmethod
    def from_state(cls, state: dict) -> SliceBaseline:
        return cls(**state)


def expected_parts(
    metric: str, breakdown: Breakdown, baseline: SliceBaseline, expected: float
) -> dict[str, dict[str, tuple[float, float]]]:
    """Per dimension value: (observed, expected) numerators of one window.

    `metric` is "volume" (expected = the series' expected count) or a rate metric (expected = the
    series' expected rate).
    """
    parts: dict[str, dict[str, tuple[float, float]]] = {}
    for dim, values in breakdown.items():
        dim_parts = {}
        names = sorted(set(values) | (baseline.values(dim) if metric == "volume" else set()))
        for value in names:
            num, den = values.get(value, (0.0, 0.0))
            if metric == "volume":
                exp = expected * baseline.share(dim, value)
            else:
                exp = den * baseline.rate(dim, value, expected)
            dim_parts[value] = (num, exp)
        parts[dim] = dim_parts
    return parts


def mix_adjusted(
    parts: dict[str, dict[str, tuple[float, float]]],
    dim: str,
    baseline: SliceBaseline,
    traffic: SliceBaseline,
    now: dict[str, float],
    expected: float,
    newcomers: set[str] | frozenset[str] = frozenset(),
) -> None:
    """Re-split a volume series' expected count over the values of `dim` (e.g. app_version) by
    what each value sends now: expected_v ∝ rate_v × traffic_v, where traffic_v is the value's
    traffic of all events in this window (`now`) and rate_v its learnt events of this series per
    event of traffic (a value never seen: the average rate). During a rollout the old version's
    share shrinks and the new one's grows, so a new version that does not send the event is the
    one blamed, not the old one whose users moved away. `newcomers` are values that appeared
    after the series did and never sent it: they are expected at the average rate (a release
    keeps sending what the app sends), not at the zero their short history says. In place; no-op
    without traffic."""
    total_now = sum(now.values())
    nums, tnum = baseline.num.get(dim, {}), traffic.num.get(dim, {})
    base_total = sum(nums.values())
    traffic_total = sum(t for v, t in tnum.items() if v not in newcomers)  # the established
    if total_now <= 0 or base_total <= 0 or traffic_total <= 0:
        return
    average = base_total / traffic_total
    observed = parts.get(dim, {})
    weights = {}
    for value in sorted(set(now) | set(observed)):
        t = tnum.get(value, 0.0)
        known = t > 1e-3 * traffic_total and value not in newcomers
        rate = nums.get(value, 0.0) / t if known else average
        weights[value] = rate * now.get(value, 0.0)
    norm = sum(weights.values())
    if norm <= 0:
        return
    parts[dim] = {
        v: (observed.get(v, (0.0, 0.0))[0], expected * w / norm) for v, w in weights.items()
    }


def accumulate(
    total: dict[str, dict[str, list[float]]], parts: dict[str, dict[str, tuple[float, float]]]
) -> None:
    """Add one window's (observed, expected) parts into running sums (bounded by the baseline)."""
    for dim, values in parts.items():
        acc = total.setdefault(dim, {})
        for value, (obs, exp) in values.items():
            slot = acc.setdefault(value, [0.0, 0.0])
            slot[0] += obs
            slot[1] += exp
        if len(acc) > 200:  # hostile cardinality: keep the biggest contributors
            keep = sorted(acc, key=lambda v: abs(acc[v][0] - acc[v][1]), reverse=True)[:100]
            total[dim] = {v: acc[v] for v in keep}


def notable(
    parts: dict[str, dict[str, list[float]] | dict[str, tuple[float, float]]],
    attribution: list[Attribution],
    margin: float = 0.15,
) -> list[Attribution]:
    """The attributions worth telling a person: values over-represented in the deviation.

    A value whose share of the deviation is about its usual share of the series (a uniform
    change) explains nothing; it must exceed its expected share by `margin`.
    """
    result = []
    for a in attribution:
        values = parts.get(a.dimension, {})
        total = sum(exp for _, exp in values.values())
        usual = values[a.value][1] / total if a.value in values and total > 0 else 0.0
        if a.share >= 0.5 and a.share - usual >= margin:
            result.append(a)
    return result


def attribute(
    parts: dict[str, dict[str, list[float]] | dict[str, tuple[float, float]]],
    direction: int,
    top: int = 3,
) -> list[Attribution]:
    """Rank dimension values by their share of the deviation in `direction` (+1 up, -1 down).

    Returns the `top` (dimension, value) pairs with the largest shares, best first.
    """
    sign = 1 if direction >= 0 else -1
    ranked: list[Attribution] = []
    for dim, values in parts.items():
        devs = {v: max(0.0, (obs - exp) * sign) for v, (obs, exp) in values.items()}
        total = sum(devs.values())
        if total <= 0:
            continue
        for value, dev in devs.items():
            if dev > 0:
                ranked.append(Attribution(dimension=dim, value=value, share=dev / total))
    ranked.sort(key=lambda a: (-a.share, a.dimension, a.value))
    return ranked[:top]
