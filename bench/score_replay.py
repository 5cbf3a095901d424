"""Score a `trackwatch replay` of a profile's files against its labels, as the hidden set is.

    trackwatch simulate --profile shop-5k --seed 7 --out data/shop/events.jsonl.gz
    trackwatch replay --plan examples/shop.yaml --events data/shop/events.jsonl.gz \\
        --annotations data/shop/annotations.yaml --alerts-out data/shop/alerts.jsonl
    .venv/bin/python bench/score_replay.py data/shop/labels.json data/shop/alerts.jsonl

Prints recall per incident class, false alerts per day and each incident's latency, with the
matching rules of `detectors.backtest` (the same as `trackwatch backtest`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detectors.backtest import Label, alert_spans, score  # noqa: E402
from detectors.records import epoch_seconds  # noqa: E402


def load(labels_path: Path, alerts_path: Path) -> tuple[list[Label], list[dict], float]:
    """The labels, the alert lines and the days the labels' run covers."""
    document = orjson.loads(labels_path.read_bytes())
    labels = [Label.from_dict(entry) for entry in document["incidents"]]
    days = (epoch_seconds(document["end"]) - epoch_seconds(document["start"])) / 86400.0
    alerts = [orjson.loads(line) for line in alerts_path.read_bytes().splitlines() if line.strip()]
    return labels, alerts, days


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("labels", type=Path, help="labels.json of `trackwatch simulate --profile`")
    parser.add_argument("alerts", type=Path, help="ALERTS.jsonl of `trackwatch replay`")
    args = parser.parse_args(argv)
    try:
        labels, alerts, days = load(args.labels, args.alerts)
        result = score(labels, alert_spans(alerts), days)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        parser.error(f"cannot score: {exc}")
    for cls, entry in result.by_class().items():
        latencies = ", ".join(
            f"{name}: {'missed' if v is None else f'{v:.0f} min'}"
            for name, v in entry["latency"].items()
        )
        print(f"{cls}: {entry['found']}/{entry['total']} ({latencies})")
    print(
        f"recall {len(result.found)}/{len(result.expected)}, "
        f"{result.false_per_day:.2f} false alerts/day ({len(result.false_alerts)} in {days:g} "
        f"days), median latency {result.median_latency} min"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
