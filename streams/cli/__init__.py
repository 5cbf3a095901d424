"""The `trackwatch` command line (typer): `app.py` holds the app and registers every command group,
one module each (detect, history, ops, plan, quarantine, run, service, simulate, validate, worker).

This file stays light: importing one group's module (`run` imports `service`) must not register
the others, which import `run` in turn."""

from __future__ import annotations

import os

from streams.stack_state import stack_environment


def main() -> None:
    """The `trackwatch` script."""
    from streams.cli.app import app

    # a running `trackwatch run` says where its broker and URLs are: they become the defaults
    # (only of what neither a flag nor the user's environment sets)
    stack_environment(os.environ)
    app()
