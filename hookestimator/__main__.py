"""`python -m hookestimator`: the same as the `hookestimator` command."""
from hookestimator.main import run

run()
