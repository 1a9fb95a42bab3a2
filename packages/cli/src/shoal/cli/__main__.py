"""`python -m shoal.cli` runs the shoal command."""

from . import main

main()
