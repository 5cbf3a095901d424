"""The `trackwatch` command line. Each command group lives in its own `cli_*.py` module and
registers itself here; errors reach the user as one clear line, never a traceback."""

from __future__ import annotations

import importlib
import os

import typer

from streams.stack_state import stack_environment

app = typer.Typer(
    name="trackwatch",
    help="Tracking-plan validation and anomaly detection for product-analytics events.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Modules that define `register(app: typer.Typer) -> None`.
COMMAND_MODULES = (
    "streams.cli_plan",  # plan lint, plan diff, plan import, validate
    "streams.cli_service",  # run, worker, collector, broker, simulate, replay
    "streams.cli_worker",  # worker, replay
    "streams.cli_detect",  # detect, backtest, anomalies
    "streams.cli_ops",  # quarantine replay, ops helpers
    "streams.cli_validate",  # validate
    "streams.cli_simulate",  # simulate
    "streams.cli_quarantine",  # quarantine replay, plans publish/current
    "streams.cli_history",  # history load/rebuild/info, explain, page
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


def main() -> None:
    # a running `trackwatch run` says where its broker and URLs are: they become the defaults
    # (only of what neither a flag nor the user's environment sets)
    stack_environment(os.environ)
    app()
