"""The trackwatch service: collector, Faust app and agents, exporter, CLI."""
