"""The simulator's people and calls: users, their sessions and the calls a session makes (pure).

Shared by the simulator (`streams.simulator.traffic`, which makes them) and the incident effects
(`streams.simulator.incidents`, which change them), so that neither module imports the other's
internals.
"""

from __future__ import annotations

from typing import Any


class User:
    __slots__ = (
        "anon",
        "country",
        "created",
        "device",
        "locale",
        "platform",
        "registered",
        "tier",
        "u",
        "user_id",
    )

    def __init__(self, anon: str, platform: str, u: float) -> None:
        self.anon = anon
        self.platform = platform
        self.u = u  # the adoption threshold of this user's device for app releases
        self.user_id: str | None = None
        self.registered = False
        self.country = "DE"
        self.locale = "de-DE"
        self.tier = "free"
        self.created = ""
        self.device: tuple[str, ...] = ()


class Session:
    """One visit: who, where, which app version, and its cart."""

    __slots__ = (
        "campaign",
        "cart",
        "cart_id",
        "context",
        "coupon",
        "flags",
        "logged_in",
        "platform",
        "source",
        "user",
        "version",
    )

    def __init__(self, user: User, platform: str, source: str, version: str | None) -> None:
        self.user = user
        self.platform = platform
        self.source = source
        self.version = version
        self.flags: dict[Any, Any] = {}  # per incident effect: its state for this session
        self.cart: list[tuple[tuple[str, str, float], int]] = []
        self.cart_id = ""
        self.coupon: str | None = None
        self.logged_in = False
        self.campaign: str | None = None
        self.context: dict[str, Any] | None = None


class SimEvent:
    """One call before it becomes a Segment body. `raw`: sent as is (incident-made invalid or
    unplanned calls), not shaped to the plan and not given a background bug."""

    __slots__ = (
        "call",
        "dropped",
        "extra",
        "name",
        "page",
        "props",
        "raw",
        "source",
        "t",
        "user",
        "user_id",
    )

    def __init__(
        self,
        t: float,
        source: str,
        call: str,
        name: str | None,
        props: dict[str, Any],
        page: dict[str, str] | None = None,
    ) -> None:
        self.t = t
        self.source = source
        self.call = call
        self.name = name
        self.props = props
        self.page = page
        self.user: User | None = None  # another sender than the session's user (bots)
        self.user_id: str | None = None  # set when the sender knows who the user is
        self.raw = False
        self.dropped = False  # removed by an incident
        self.extra = False  # added by an incident

    def copy(self) -> SimEvent:
        other = SimEvent(self.t, self.source, self.call, self.name, dict(self.props), self.page)
        other.user = self.user
        other.user_id = self.user_id
        other.raw = self.raw
        other.extra = self.extra
        return other
