"""The violation taxonomy: stable codes shared by the validator, quarantine and metrics."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Code(StrEnum):
    """Stable violation codes. Never rename one: dashboards and alerts key on them."""

    UNPLANNED_EVENT = "unplanned_event"
    MISSING_REQUIRED = "missing_required"
    WRONG_TYPE = "wrong_type"
    NOT_NULLABLE = "not_nullable"
    NOT_IN_ENUM = "not_in_enum"
    PATTERN_MISMATCH = "pattern_mismatch"
    OUT_OF_RANGE = "out_of_range"
    TOO_LONG = "too_long"
    UNPLANNED_PROPERTY = "unplanned_property"
    BAD_TIMESTAMP = "bad_timestamp"
    BAD_CURRENCY = "bad_currency"
    MISSING_IDENTITY = "missing_identity"
    MISSING_CONTEXT = "missing_context"
    WRONG_SOURCE = "wrong_source"
    DEPRECATED_EVENT = "deprecated_event"
    DUPLICATE = "duplicate"
    DUPLICATE_KEY = "duplicate_key"  # a business key (plan `unique`) repeated under a new messageId
    PII_DETECTED = "pii_detected"
    MALFORMED_JSON = "malformed_json"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    BAD_ENVELOPE = "bad_envelope"


@dataclass(frozen=True, slots=True)
class Violation:
    """One problem with one event: what rule, where (JSON path), what was expected, what arrived.

    `got` is a short, printable description of the offending value (never a huge string):
    validators truncate it so that quarantine records and reports stay small.
    """

    code: str
    path: str
    expected: str
    got: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "path": self.path, "expected": self.expected, "got": self.got}
