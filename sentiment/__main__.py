"""`python -m sentiment` is the `sentiment-jobs` command: what a submitted Ray job runs."""

from sentiment.cli import main

main()
