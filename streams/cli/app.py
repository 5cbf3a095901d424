"""The `trackwatch` Typer app: each command group lives in its own module of `streams.cli` and
registers itself here; errors reach the user as one clear line, never a traceback."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="trackwatch",
    help="Tracking-plan validation and anomaly detection for product-analytics events.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Modules that define `register(app: typer.Typer) -> None`.
COMMAND_MODULES = (
    "streams.cli.plan",  # plan lint, plan diff, plan import, validate
    "streams.cli.service",  # run, worker, collector, broker, simulate, replay
    "streams.cli.worker",  # worker, replay
    "streams.cli.detect",  # detect, backtest, anomalies
    "streams.cli.ops",  # quarantine replay, ops helpers
    "streams.cli.validate",  # validate
    "streams.cli.simulate",  # simulate
    "streams.cli.quarantine",  # quarantine replay, plans publish/current
    "streams.cli.history",  # history load/rebuild/info, explain, page
)


def _register_all() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that command group is not built yet
                continue
            raise
        module.register(app)


_register_all()
