"""The detection engine's settings (`EngineConfig`, every one in examples/detectors.yaml) and its
vocabulary: the model class of each metric, the directions each is watched in, the alert kind of
each, and how incidents of different kinds relate and take precedence."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from detectors.lifecycle import LifecycleConfig
from detectors.rollup import DEFAULT_LEVELS, Level
from detectors.slices import SliceConfig

MODEL_CLASSES = {
    "volume": "detectors.volume:VolumeModel",
    "activity": "detectors.volume:VolumeModel",
    "violation": "detectors.rate:RateModel",
    "conversion": "detectors.rate:RateModel",
}
FAMILIES = {
    "volume": ("up", "down"),
    "activity": ("down",),  # running sessions gone silent; a rise of users is told per event
    "violation": ("up",),
    "conversion": ("up", "down"),
}
KINDS = {
    ("volume", "up"): "spike",
    ("volume", "down"): "drop",
    ("activity", "down"): "drop",
    ("violation", "up"): "violation_surge",
    ("conversion", "up"): "conversion_up",
    ("conversion", "down"): "conversion_down",
}
# a rise of an event itself, by incident group (what `Incidents._echo` looks for)
RISES = {f"{metric}:up": KINDS[(metric, "up")] for metric in ("volume", "violation")}
# slice tests (`detectors.slices`): the incident group and kind of each family's alarm
SEQUENTIAL = {
    "gone": ("volume:down", "disappeared"),
    "pair_gone": ("volume:down", "disappeared"),
    "conv_down": ("conversion:down", "conversion_down"),
    "conv_less": ("conversion:down", "conversion_down"),
    "conv_up": ("conversion:up", "conversion_up"),
    "bad": ("violation:up", "violation_surge"),
    "repeat": ("volume:up", "spike"),
}
SEQ = "seq:"  # prefix of the track names of slice tests
# incident groups whose alerts can be about the same trouble (see `Incidents._related`)
RELATED = {
    "conversion:down": ("volume:down",),
    "volume:down": ("conversion:down", "violation:up"),
    "conversion:up": ("volume:up",),
    "volume:up": ("conversion:up",),
    "violation:up": ("volume:down",),
}
# when one incident holds several kinds, it is told as the strongest (never the other way back)
PRECEDENCE = {
    "conversion_up": 1,
    "conversion_down": 1,
    "spike": 2,
    "drop": 2,
    "disappeared": 3,
    "violation_surge": 4,
}


@dataclass(frozen=True)
class EngineConfig:
    levels: tuple[Level, ...] = DEFAULT_LEVELS
    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)
    # metric -> SeriesModel class (or "module:Class") with a `from_state` classmethod
    model_classes: dict[str, Any] = field(default_factory=lambda: dict(MODEL_CLASSES))
    model_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    disappear_windows: int = 3
    # Events come in bursts (a session sends many), so evidence is counted in "units": events
    # divided by the series' usual events per user and window (for rates: the numerator).
    disappear_units: float = 10.0  # expected units during an empty run to call it gone
    min_excess_units: float = 5.0  # a spike/drop must be worth this many users' events
    bot_units: float = 50.0  # ... a spike from fewer users must be worth this many (a bot)
    # a rise of an event a release itself causes (`detectors.worth.RELEASE_EVENTS`) from versions
    # first seen this recently (or its source's newest, still rolling out), one event per user,
    # is the release arriving: a forced update lands within hours, phones' automatic updates
    # overnight (on a charger and Wi-Fi) within a day of the store offering it; two days cover
    # both with a night to spare
    release_hours: float = 48.0
    learn_excess_units: float = 2.0  # a volume window is left unlearnt only if worth this many
    min_change: float = 0.25  # ... and change the total by this fraction
    min_rate_excess: float = 15.0  # a rate change must be worth this many users / events
    quiet_factor: float = 2.0  # gone = empty for longer than this × the longest normal quiet
    quiet_decay: float = 1.0 - 1.0 / (7 * 1440)  # quiet spells are forgotten over ~a week
    # an event nobody planned is not expected at all: what matters is that it keeps coming (in
    # 3 windows, 5 events) within half an hour, not its density (a release rolling out sends
    # it sparsely at first: 5 windows needed 10 events in 5 minutes, i.e. an hour or more; 10
    # events in half an hour took a release 17-51 min after its start, 5 events 10-45 min)
    new_event_windows: int = 3
    new_event_span: int = 30
    new_event_min_count: int = 5
    new_event_after_minutes: float = 12 * 60.0
    new_event_hold_minutes: float = 60.0
    accept_after_minutes: float = 240.0
    merge_minutes: float = 120.0  # a lifecycle joins an incident that began at most this before
    together_minutes: float = 5.0  # ... or one of another event of its source (0: never)
    evict_after_minutes: float = 3 * 24 * 60.0
    annotation_tail_minutes: float = 60.0  # models look back up to an hour: stay quiet after
    max_series: int = 20_000
    max_gap_windows: int = 24 * 60
    attribution_top: int = 3
    baseline_alpha: float = 0.02
    slice_dims: tuple[str, ...] = ("app_version",)  # attribution splits a source's mix by these
    slice_tests: bool = True  # sequential tests of versions, funnel steps, breakages, repeats
    slices: SliceConfig = field(default_factory=SliceConfig)
    slice_batch_windows: int = 10  # windows summed into one observation of the `gone` test
    echo_hours: float = 6.0  # a conversion rise names a rise of its last step this recent
    # active users (activity series) far fewer than their model expects, judged sequentially
    # since the onset (`_silenced`): a near-total outage seen in a minute or two, not when the
    # window-by-window score (made wide by the traffic's own spread) finally agrees
    # false alarms per source and day its silence test allows (threshold ln(excursions a day /
    # this)): stricter than the slices' (`slices.alpha_per_day`), as a false outage is the
    # loudest alert and its usual is the least certain (the last minutes' users)
    silence_alpha_per_day: float = 1e-4
    silence_rho: float = 0.1  # the alternative: at most this share of the expected users came
    silence_told: float = 0.35  # told only if at most this share came since the onset ...
    silence_min_users: float = 5.0  # ... of at least this many expected users
    # ... against at most the users of the last minutes (EW, this half-life): where traffic
    # falls faster than the model knows (an evening on a young model), what just came is nearer
    silence_recent_minutes: float = 10.0
    context_min_events: float = 20.0  # a scope's traffic ratio needs this many expected events
