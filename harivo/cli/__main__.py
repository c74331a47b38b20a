"""`python -m harivo.cli ...`, as the `harivo` command (`accelerate launch -m harivo.cli train ...` uses it)."""

from . import main

main()
