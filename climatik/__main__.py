"""`python -m climatik` runs the command line."""

from climatik.cli import main

main()
