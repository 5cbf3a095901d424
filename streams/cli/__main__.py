"""`python -m streams.cli`: the same as the `trackwatch` command."""

from streams.cli import main

main()
