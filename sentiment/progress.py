"""Progress of a long step: done/total with rate and time left.

On a terminal one line on stderr rewritten in place; in logs (not a terminal) a log line
at most every `every_s` seconds, and one at the end.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO


class Progress:
    """`add(n)` as work is done; `close()` at the end (or use it as a context manager)."""

    def __init__(
        self,
        total: int,
        what: str,
        log: logging.Logger,
        every_s: float = 10.0,
        stream: TextIO | None = None,
    ):
        self.total, self.what, self.log = total, what, log
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() and log.isEnabledFor(logging.INFO)
        self.every_s = 0.5 if self.tty else every_s
        self.done = 0
        self.start = self.last = time.monotonic()
        self.first: tuple[float, int] | None = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def add(self, n: int) -> None:
        now = time.monotonic()
        if self.first is None:  # the rate runs from the first piece done, not from the
            self.first = (now, n)  # start-up (actors loading the model) before it
        self.done += n
        if now - self.last >= self.every_s and self.done < self.total:
            self.last = now
            self._show(self.line(now))

    def line(self, now: float | None = None) -> str:
        now = now if now is not None else time.monotonic()
        since, before = self.first or (self.start, 0)
        rate = (self.done - before) / (now - since) if now > since else 0.0
        share = f" ({100 * self.done / self.total:.0f} %)" if self.total else ""
        text = f"{self.what}: {self.done:,} of {self.total:,}{share}, {rate:,.0f}/s"
        if 0 < self.done < self.total and rate > 0:
            text += f", about {_duration((self.total - self.done) / rate)} left"
        return text

    def close(self) -> None:
        if self.tty:
            self.stream.write("\r\033[K")  # the line is replaced by the step's own summary
            self.stream.flush()
        elif self.done and time.monotonic() - self.start >= self.every_s:
            self.log.info(self.line())

    def _show(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + text)
            self.stream.flush()
        else:
            self.log.info(text)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"
