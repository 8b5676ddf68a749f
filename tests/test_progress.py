"""Progress lines: in logs at most one per interval and one at the end; on a terminal one
line rewritten in place."""

from __future__ import annotations

import io
import logging

from sentiment import progress as progress_module
from sentiment.progress import Progress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_log_lines_at_most_every_interval_with_rate_and_time_left(monkeypatch, caplog):
    clock = Clock()
    monkeypatch.setattr(progress_module.time, "monotonic", clock)
    log = logging.getLogger("test.progress")
    caplog.set_level(logging.INFO, logger="test.progress")
    with Progress(1000, "rows scored", log, every_s=10, stream=io.StringIO()) as p:
        clock.now = 5.0
        p.add(100)  # the first piece: start-up time is not part of the rate
        clock.now = 6.0
        p.add(100)  # under 10 s since the start: no line
        clock.now = 15.0
        p.add(100)  # 200 rows in 10 s since the first piece: 20/s, 700 left
        clock.now = 16.0
        p.add(100)  # under 10 s since the last line: none
        clock.now = 40.0
        p.add(600)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "rows scored: 300 of 1,000 (30 %), 20/s, about 35 s left",
        "rows scored: 1,000 of 1,000 (100 %), 26/s",
    ]


def test_a_terminal_gets_one_line_rewritten_and_cleared():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    log = logging.getLogger("test.progress.tty")
    log.setLevel(logging.INFO)
    stream = Tty()
    with Progress(10, "rows scored", log, stream=stream) as p:
        p.last -= 1  # the interval (0.5 s on a terminal) has passed
        p.add(5)
    text = stream.getvalue()
    assert text.startswith("\r\033[Krows scored: 5 of 10 (50 %)") and text.endswith("\r\033[K")
