"""The local stack's own log lines: JSON on stderr, like the functions' Powertools lines, so
that everything tokenvend local writes to stderr reads with one tool (`jq`, a log viewer).
Their `timestamp` is written as the functions' Logger writes it (tokenvend_core.observability:
Powertools' `use_rfc3339` in UTC): RFC 3339 to the millisecond, "2026-11-30T07:47:27.842+00:00".

Never pass a secret, a token, a signature or a request body here."""

from __future__ import annotations

import io
import json
import sys
import threading
from datetime import UTC, datetime
from typing import Any, TextIO

SERVICE = "tokenvend-local"
_lock = threading.Lock()


def timestamp(moment: datetime | None = None) -> str:
    """A log line's timestamp, as Powertools' Logger writes it with `utc` and `use_rfc3339`."""
    return (moment or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="milliseconds")


def log(message: str, *, level: str = "INFO", **fields: Any) -> None:
    record = {
        "level": level,
        "location": "tokenvend.local",
        "message": message,
        "timestamp": timestamp(),
        "service": SERVICE,
        **fields,
    }
    sys.stderr.write(json.dumps(record, default=str, separators=(",", ":")) + "\n")


class LineWriter(io.TextIOBase):
    """A text stream shared by threads that writes whole lines only.

    The functions' Powertools logger, their metrics (print) and the local stack write to
    stderr from many threads, each through its own lock or none: a line could be cut by
    another. Here each thread's text is held until its newline, then the line is written in
    one piece, so that every line on stderr is one JSON document."""

    def __init__(self, target: TextIO) -> None:
        super().__init__()
        self._target = target
        self._pending = threading.local()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        pending = getattr(self._pending, "text", "") + text
        complete, newline, rest = pending.rpartition("\n")
        self._pending.text = rest
        if newline:
            with _lock:
                self._target.write(complete + newline)
                self._target.flush()
        return len(text)

    def flush(self) -> None:
        with _lock:
            self._target.flush()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._target, "encoding", "utf-8")

    def isatty(self) -> bool:
        return self._target.isatty()
