"""`python -m edgekd` (and `torchrun ... -m edgekd distill ...`) run the CLI."""

from edgekd.cli import main

main()
