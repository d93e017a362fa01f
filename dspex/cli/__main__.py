"""`python -m dspex.cli`: the same as the `dspex` script."""

from dspex.cli import main

main()
