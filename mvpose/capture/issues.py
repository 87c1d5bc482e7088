"""One log of everything that makes a capture's result doubtful, for the console, ``report.txt`` and ``summary.json``.

Every warning of the capture path goes through an :class:`IssueLog`: an entry has a ``kind`` (what sort of
problem: ``input``, ``placeholders``, ``views``, ``units``, ``skeleton``, ``calibration``, ...), a message and a
count (files, frames or joints concerned). :meth:`IssueLog.capture_logging` also turns the warnings that
other modules log while a capture runs (calibration readers, the temporal filter, the model path's frame
reader) into entries, counted per message template, so that nothing reaches the console alone.

This module is a leaf (no mvpose imports) so that the pipeline and its helpers share it without cycles.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Iterator

__all__ = ["CaptureError", "Issue", "IssueLog"]

log = logging.getLogger("mvpose.capture")


class CaptureError(ValueError):
    """The capture cannot be processed at all; the message says what was expected and what was found."""


@dataclass
class Issue:
    """One problem: ``count`` things (files, frames, joints, ...) of the same ``kind``."""

    kind: str
    message: str
    count: int = 1

    def as_dict(self) -> dict:
        return {"kind": self.kind, "count": self.count, "message": self.message}


class IssueLog:
    """Issues of one capture, in the order found; iterating, indexing and ``append`` see the messages (``str``)."""

    def __init__(self) -> None:
        self.entries: list[Issue] = []
        self._from_log: dict[tuple[str, str], Issue] = {}
        self._capturing = False

    def add(self, message: str, kind: str = "input", count: int = 1) -> Issue:
        """Log ``message`` as a warning and keep it."""
        log.warning("%s", message, extra={"mvpose_issue": True})
        issue = Issue(kind, message, int(count))
        self.entries.append(issue)
        return issue

    def append(self, message: str) -> None:
        """``list.append`` for callers that kept plain message lists: an ``input`` issue."""
        self.add(message)

    def __iter__(self) -> Iterator[str]:
        return (i.message for i in self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> str:
        return self.entries[i].message

    def counts(self) -> dict[str, int]:
        """Total count per kind."""
        out: dict[str, int] = {}
        for i in self.entries:
            out[i.kind] = out.get(i.kind, 0) + i.count
        return out

    def as_dicts(self) -> list[dict]:
        return [i.as_dict() for i in self.entries]

    def _record(self, record: logging.LogRecord) -> None:
        key = (record.name, str(record.msg))
        kind = record.name.rsplit(".", 1)[-1]
        if key in self._from_log:
            issue = self._from_log[key]
            issue.count += 1
            first = issue.message.split(" [and ")[0]
            issue.message = f"{first} [and {issue.count - 1} more like it]"
        else:
            issue = Issue(kind, record.getMessage())
            self._from_log[key] = issue
            self.entries.append(issue)

    @contextlib.contextmanager
    def capture_logging(self, logger: str = "mvpose") -> Iterator[None]:
        """Keep every WARNING or worse logged under ``logger`` (from any thread) as an issue while the block runs.

        Records are still printed by the usual handlers; repeats of one message template become one entry
        with a count.
        """
        if self._capturing:  # nested: the outer block already listens
            yield
            return
        owner = self

        class _Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if not getattr(record, "mvpose_issue", False):
                    owner._record(record)

        handler = _Handler(logging.WARNING)
        target = logging.getLogger(logger)
        target.addHandler(handler)
        self._capturing = True
        try:
            yield
        finally:
            self._capturing = False
            target.removeHandler(handler)
