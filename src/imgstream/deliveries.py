"""What a consumer is handed when it reads a jobs stream, and what starting one takes.

No I/O: these are the values the queue (``queue``), the worker loop and its upkeep
(``held_entries``) pass between them. A delivery is either *valid* (its fields decode into a
``StreamEntry``: the only kind a job is started, finished or failed with) or *malformed*
(it is only ever discarded), so code that starts a job never checks for a missing entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from imgstream.jobs import StreamEntry


@dataclass(frozen=True, slots=True)
class Lane:
    """One jobs stream of the layout: partition ``part``'s, for ``operation`` ("": all)."""

    part: int
    operation: str
    stream: str


class EntryRef(NamedTuple):
    """An entry as a consumer holds it: entry ids are unique within a stream only."""

    stream: str
    entry_id: str


@dataclass(frozen=True, slots=True)
class ValidDelivery:
    """An entry handed to this consumer whose fields decode: the only kind a job is started,
    finished or failed with."""

    entry_id: str
    entry: StreamEntry
    stream: str = ""
    """The stream it was read from (whose group holds it pending)."""

    @property
    def job_id(self) -> str:
        return self.entry.job_id

    @property
    def ref(self) -> EntryRef:
        return EntryRef(self.stream, self.entry_id)


@dataclass(frozen=True, slots=True)
class MalformedDelivery:
    """An entry handed to this consumer whose fields do not decode (``problem`` says why):
    it is only ever discarded."""

    entry_id: str
    problem: str
    stream: str = ""
    """The stream it was read from (whose group holds it pending)."""
    entry: None = None
    job_id: None = None

    @property
    def ref(self) -> EntryRef:
        return EntryRef(self.stream, self.entry_id)


Delivery = ValidDelivery | MalformedDelivery
"""What reading the stream hands a consumer."""


class Starting(NamedTuple):
    """The arguments of one ``JobQueue.start``: a job to start under ``lease``."""

    delivery: ValidDelivery
    lease: str
    consumer: str
    max_attempts: int
