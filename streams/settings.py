"""Service settings (broker address, plan, write keys, ports, collector limits) and the write-key
file loader. Values come from CLI flags, else ``TRACKWATCH_*`` environment variables, else the
defaults below."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

ENV_PREFIX = "TRACKWATCH_"


class SettingsError(ValueError):
    """A setting or a settings file is wrong; the message says where and what to change."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the collector and `trackwatch run` need. Environment names: TRACKWATCH_<NAME>."""

    broker: str = "127.0.0.1:9092"  # Kafka bootstrap servers, comma-separated
    plan: Path = Path("examples/ecommerce.yaml")
    write_keys: Path = Path("examples/write_keys.yaml")
    host: str = "127.0.0.1"  # collector listen address
    port: int = 8080  # collector port
    worker_port: int = 6066  # worker web port (/api/anomalies)
    worker_metrics_port: int = 9108  # worker Prometheus /metrics port
    topic: str = "events.raw"
    # Limits (bytes): per event and per request, after decompression.
    max_event_bytes: int = 32 * 1024
    max_request_bytes: int = 500 * 1024
    # Micro-batching towards Kafka.
    flush_interval: float = 0.05  # seconds a partition buffer may wait
    max_batch_envelopes: int = 500
    max_message_bytes: int = 900_000  # one Kafka message stays below the 1 MiB default limit
    produce_timeout: float = 5.0  # seconds a request waits for Kafka before answering 503
    max_pending_bytes: int = 64 * 1024 * 1024  # awaiting Kafka; beyond it: 503 at once
    retry_after: int = 2  # seconds, sent with 503
    # Secret key of the keyed hash (HMAC-SHA256) that replaces the values of `pii: true` plan
    # properties before anything reaches Kafka; empty: they are redacted instead. Never printed.
    pii_key: str = field(default="", repr=False)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then TRACKWATCH_* variables, then `overrides` that are not None."""
        environ = dict(os.environ if environ is None else environ)
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = _convert(f.name, raw, getattr(cls(), f.name))
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.check()
        return settings

    def with_(self, **changes: Any) -> Settings:
        """A copy with some fields changed (None values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def check(self) -> None:
        """Raise SettingsError on values that cannot work."""
        positive = (
            "max_event_bytes",
            "max_request_bytes",
            "max_batch_envelopes",
            "max_pending_bytes",
        )
        for name in (*positive, "flush_interval", "produce_timeout"):
            if not 0 < getattr(self, name) < math.inf:
                raise SettingsError(
                    f"{name} must be positive and finite, got {getattr(self, name)}"
                )
        for name in ("port", "worker_port", "worker_metrics_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise SettingsError(
                    f"{name} must be a TCP port (0-65535), got {getattr(self, name)}"
                )
        if self.retry_after < 0:
            raise SettingsError(f"retry_after must be 0 or more seconds, got {self.retry_after}")
        if self.max_event_bytes > self.max_request_bytes:
            raise SettingsError("max_event_bytes cannot exceed max_request_bytes")
        if self.max_message_bytes < self.max_event_bytes + 1024:
            raise SettingsError("max_message_bytes must leave room for one full-size event")


def _convert(name: str, raw: str, default: Any) -> Any:
    target = type(default)
    try:
        if isinstance(default, Path):
            return Path(raw)
        return target(raw)
    except ValueError:
        raise SettingsError(
            f"environment variable {ENV_PREFIX}{name.upper()}={raw!r} is not a valid "
            f"{target.__name__}"
        ) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (a silently shadowed write key is a bug)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise SettingsError(
                f"line {line}: key {key!r} appears twice (first on line {seen[key]}); "
                "remove one of them"
            )
        seen[key] = line
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


def load_write_keys(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read a write-key file ``{keys: {<write key>: <source>}}`` into {write key: source}.

    Raises SettingsError naming the file, the line when known, and what to change.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SettingsError(
            f"{path}: write-key file not found (pass --write-keys FILE or set "
            f"{ENV_PREFIX}WRITE_KEYS; see examples/write_keys.yaml)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{path}: cannot read write-key file: {exc}") from None
    try:
        document = yaml.load(text, Loader=_UniqueKeyLoader)
    except SettingsError as exc:
        raise SettingsError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SettingsError(f"{path}: {where}invalid YAML: {problem}") from None
    if not isinstance(document, dict) or "keys" not in document:
        raise SettingsError(
            f"{path}: expected a mapping with a 'keys' entry: keys: {{KEY: SOURCE}}"
        )
    keys = document["keys"]
    if not isinstance(keys, dict) or not keys:
        raise SettingsError(f"{path}: 'keys' must map each write key to a source name")
    result: dict[str, str] = {}
    for key, source in keys.items():
        if not isinstance(key, str) or not key.strip():
            raise SettingsError(
                f"{path}: write key {key!r} must be a non-empty string (quote it in YAML)"
            )
        if ":" in key:
            raise SettingsError(
                f"{path}: write key {key!r} contains ':' (HTTP Basic cannot carry it)"
            )
        if not isinstance(source, str) or not source.strip():
            raise SettingsError(
                f"{path}: write key {key!r} must map to a source name, got {source!r}"
            )
        result[key] = source
    return result
