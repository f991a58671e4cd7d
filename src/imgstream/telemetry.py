"""What a worker tells the world about a job: a log line per event, and the fleet's counters.

Every job event carries the same fields (``job``, ``consumer``, ``operation``, ``attempt``;
``duration_s``, ``outcome``, ``error_code`` when it ends), so one job can be followed by its
id from the API's ``job.accepted`` to a worker's ``job.started`` and ``job.finished``.
``finished`` is called only by the worker whose outcome ``finish.lua`` recorded, so each job
is counted once; its durations are tallied in the process and sent by ``flush`` (the worker
flushes when a batch of entries ends, or when the tally is due), which never raises for
Redis trouble.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from imgstream.deliveries import Delivery, ValidDelivery
from imgstream.job_counters import JobMetrics, operation_label
from imgstream.jobs import entry_id_ms

log = logging.getLogger("imgstream.worker")


class JobTelemetry:
    def __init__(self, metrics: JobMetrics, consumer: str) -> None:
        self.metrics = metrics
        self.consumer = consumer

    def fields(self, delivery: Delivery, attempt: int | None = None, **more: Any) -> dict[str, Any]:
        """The ``extra=`` fields of a log line about this delivery's job."""
        entry = delivery.entry
        fields: dict[str, Any] = {
            "job": entry.job_id if entry else None,
            "entry": delivery.entry_id,
            "consumer": self.consumer,
            "operation": operation_label(entry.operations) if entry else None,
        }
        if attempt is not None:
            fields["attempt"] = attempt
        fields.update(more)
        return fields

    def started(self, delivery: ValidDelivery, attempt: int) -> float:
        """Log the start of an attempt; returns the monotonic time it began."""
        log.info(
            "job %s started",
            delivery.job_id,
            extra=self.fields(delivery, attempt, event="job.started"),
        )
        return time.monotonic()

    def finished(
        self,
        delivery: ValidDelivery,
        outcome: str,
        began: float | None,
        *,
        code: str = "",
        error: str = "",
    ) -> None:
        """Log a recorded outcome (``done``/``failed``) and tally it, with its durations.

        ``began`` is when the last attempt started (None when no attempt ran, as for a
        poison job); end to end runs from the stream entry's time, which Redis stamped when
        the job was accepted (or requeued from the dead letters).
        """
        entry = delivery.entry
        now = time.time()
        duration = None if began is None else time.monotonic() - began
        queued_at = entry_id_ms(delivery.entry_id) / 1000
        fields = self.fields(delivery, event="job.finished", outcome=outcome)
        if duration is not None:
            fields["duration_s"] = round(duration, 4)
        if code:
            fields.update(error_code=code, error=error)
        log.info("job %s %s", entry.job_id, outcome, extra=fields)
        self.metrics.count(
            job_id=entry.job_id,
            operations_json=entry.operations,
            status=outcome,
            now=now,
            processing_seconds=duration,
            end_to_end_seconds=max(0.0, now - queued_at),
            error_code=code,
            error=error,
            consumer=self.consumer,
        )

    async def flush(self, *, only_if_due: bool = False) -> None:
        """Send the tallied counters (``only_if_due``: if the oldest has waited long enough)."""
        if not only_if_due or self.metrics.due():
            await self.metrics.flush()
