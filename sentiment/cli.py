"""The `sentiment-jobs` command line (the only typer importer).

Each command turns its options into a config dataclass, calls one library
function, and prints a summary. A `SentimentError` becomes one line on stderr
and exit status 1, so a scheduler sees the failure and the reason.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import typer

from sentiment.config import SentimentError

app = typer.Typer(
    help="Train GRU sentiment classifiers and score Parquet collections of reviews on Ray.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug detail."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn a known user error into one line and a non-zero exit."""
    try:
        yield
    except SentimentError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=1) from None


# --- commands are added below, one section each -------------------------------------


def main() -> None:
    app()
