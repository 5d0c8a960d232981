"""When a series is complete: no instance for ``series_timeout_s``, or its association released.

A complete series' folder is moved to ``jobs/<id>/input`` (one rename, under the series' lock, so no
store lands in it half-way) and its job becomes ``queued``; an instance of the same series arriving later
starts a new job. A series an open association is still sending waits for that association to end: at
release it is queued (if no other open association sends it), after an abort it is left to the timeout.
"""

from __future__ import annotations

import logging
import threading
import time

from pantherseg.errors import PantherError
from pantherseg.node.journal import Journal
from pantherseg.node.spool import Spool

log = logging.getLogger(__name__)


class Completer:
    """Queues complete series; :meth:`run_in_thread` polls the journal for timed-out ones."""

    def __init__(self, spool: Spool, journal: Journal, *, series_timeout_s: float, clock=time.time):
        self.spool = spool
        self.journal = journal
        self.series_timeout_s = series_timeout_s
        self.clock = clock
        self.busy = lambda: set()  # job ids an open association is still sending (the SCP sets it)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def complete(self, job_id: int, *, why: str) -> bool:
        """Queue the job's series if it is still receiving; True if it was queued now."""
        job = self.journal.job(job_id)
        if job is None or job.state != "received":
            return False
        with self.spool.series_lock(job.series_uid):
            job = self.journal.job(job_id)  # a store may have finished meanwhile: it is in the folder now
            if job is None or job.state != "received":
                return False
            try:
                self.spool.take_series(job.study_uid, job.series_uid, job.id)
            except (PantherError, OSError) as error:
                self.journal.queue(job.id)
                self.journal.mark_failed(job.id, f"the received series could not be taken from the spool: {error}")
                log.error("job %d (series %s): %s", job.id, job.series_uid, error)
                return False
            self.journal.queue(job.id)
        log.info(
            "job %d queued: series %s complete (%s), %d instance(s), %d bytes",
            job.id,
            job.series_uid,
            why,
            job.instances,
            job.bytes,
        )
        return True

    def complete_due(self) -> int:
        """Queue every series whose last instance is older than the timeout and that no open association is
        still sending (a scanner may send slice by slice as it acquires); how many were queued."""
        due = self.journal.due_for_completion(self.clock() - self.series_timeout_s)
        busy = self.busy()
        return sum(
            self.complete(job.id, why=f"no instance for {self.series_timeout_s:g} s")
            for job in due
            if job.id not in busy
        )

    def run_in_thread(self) -> None:
        interval = min(1.0, max(self.series_timeout_s / 4, 0.05))

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.complete_due()
                except Exception:  # noqa: BLE001 - the timer must survive one bad poll (logged, retried)
                    log.exception("series completion check failed; retrying")

        self._thread = threading.Thread(target=loop, name="series-completion", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
