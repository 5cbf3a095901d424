"""Deterministic randomness keyed by what it is about, so that runs share their random numbers.

Every user, session and release draws from its own stream, named by integers (`key`): the
numbers a session uses do not depend on how many other sessions came before it, or on whether
an incident changed some other session. Two runs of one seed, with and without an incident,
are therefore the same traffic except where the incident acts (common random numbers).
"""

from __future__ import annotations

import random
import zlib

MASK = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def _mix(value: int) -> int:
    """SplitMix64's finaliser: a bijection of 64-bit integers that scrambles every bit."""
    value = (value + GOLDEN) & MASK
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & MASK
    return value ^ (value >> 31)


def key(*parts: int | str) -> int:
    """A 64-bit key for a tuple of integers and strings (strings by their CRC-32)."""
    value = 0
    for part in parts:
        number = zlib.crc32(part.encode()) if isinstance(part, str) else part
        value = _mix(value ^ (number & MASK))
    return value


def unit(*parts: int | str) -> float:
    """A uniform number in [0, 1) determined by `parts`."""
    return (key(*parts) >> 11) / float(1 << 53)


def split(value: int) -> tuple[float, float]:
    """Two independent uniform numbers in [0, 1) from one key."""
    return (value >> 11) / float(1 << 53), (_mix(value) >> 11) / float(1 << 53)


def stream(*parts: int | str) -> random.Random:
    """A random generator of its own for `parts`."""
    return random.Random(key(*parts))


def uuid(rng: random.Random) -> str:
    """A random (version 4 shaped) UUID string from `rng`."""
    text = f"{rng.getrandbits(128) | (1 << 127):032x}"[-32:]
    return f"{text[:8]}-{text[8:12]}-4{text[13:16]}-a{text[17:20]}-{text[20:]}"
