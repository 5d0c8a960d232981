"""``pantherseg serve-dicom``: the spool, the journal, the SCP, the completion timer and the worker, together.

Start: the spool's folders; the journal recovers (held jobs requeued, receiving series' timers restarted,
instances on disk but missing from the journal added); the worker process loads the ensemble (a bad config or
model ends the start with its one-line error and exit code, before anything listens); then the SCP listens.

Stop (SIGTERM or SIGINT): no new associations; open ones get a few seconds to finish and are then aborted
(an unacknowledged store was not acknowledged, so the sender resends it); the worker finishes its current job
within ``shutdown_grace_s``, or is killed and the job requeued (it resumes at the next start); exit 0.
A worker that dies on its own (out of memory, a crash in a decoder) is restarted; the job it held is requeued
once, and failed the second time.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

from pantherseg.errors import PantherError, ResourceError
from pantherseg.node.completion import Completer
from pantherseg.node.config import NodeConfig
from pantherseg.node.journal import Journal
from pantherseg.node.scp import StoreSCP
from pantherseg.node.spool import Spool

log = logging.getLogger(__name__)

STATUS_FILE = "node.json"
LOAD_TIMEOUT_S = 900.0
MAX_WORKER_DEATHS_PER_JOB = 2
SCP_GRACE_S = 5.0


class NodeService:
    def __init__(self, config: NodeConfig, *, log_level: int = logging.INFO):
        self.config = config
        self.log_level = log_level
        self.spool = Spool(
            config.spool, max_disk_use_percent=config.max_disk_use_percent, min_free_bytes=config.min_free_bytes
        )
        self.stopping = threading.Event()
        self._context = multiprocessing.get_context("spawn")
        self._worker = None
        self._worker_stop = None
        self.journal: Journal | None = None
        self.scp: StoreSCP | None = None
        self.completer: Completer | None = None
        self.address: tuple[str, int] | None = None

    # --- the whole life ------------------------------------------------------------------------------------
    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; 0 after a clean stop. Raises PantherError if the start fails."""
        self._install_signals()
        try:
            self.start()
            while not self.stopping.wait(0.5):
                self._watch_worker()
        finally:
            self.stop()
        return 0

    def _install_signals(self) -> None:
        def on_signal(signum, frame):
            if not self.stopping.is_set():
                log.info(
                    "%s: stopping (no new associations; the current job finishes or is requeued)",
                    signal.Signals(signum).name,
                )
            self.stopping.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def start(self) -> None:
        self.spool.create()
        self.journal = Journal(self.spool.journal_path)
        self._recover()
        self._start_worker()
        self.completer = Completer(self.spool, self.journal, series_timeout_s=self.config.series_timeout_s)
        self.completer.complete_due()
        self.completer.run_in_thread()
        self.scp = StoreSCP(self.config, self.spool, self.journal, self.completer)
        self.address = self.scp.start()
        self._write_status("running")

    def stop(self) -> None:
        if self.scp is not None:
            self.scp.stop(grace_s=min(SCP_GRACE_S, self.config.shutdown_grace_s))
            self.scp = None
        if self.completer is not None:
            self.completer.stop()
            self.completer = None
        self._stop_worker()
        if self.journal is not None:
            self._write_status("stopped")
            self.journal.close()
            self.journal = None
        log.info("DICOM node stopped")

    # --- start-up recovery -------------------------------------------------------------------------------------
    def _recover(self) -> None:
        added = self._journal_unrecorded_instances()
        counts = self.journal.recover()
        for job in self.journal.jobs(states=("received",)):
            if self.spool.job_input(job.id).is_dir():  # taken from incoming/ just before a stop
                self.journal.queue(job.id)
        log.info(
            "journal recovered: %d job(s) requeued, %d series still receiving, %d queued, %d instance(s) "
            "found on disk only",
            counts["requeued"],
            counts["receiving"],
            counts["queued"],
            added,
        )

    def _journal_unrecorded_instances(self) -> int:
        """Instances renamed into the spool just before a crash, not yet in the journal (not acknowledged
        either: the sender resends them, and they count once)."""
        added = 0
        for study, series, sop, path, size in self.spool.incoming_instances():
            job = self.journal.open_job(series)
            if job is not None and self.journal.has_instance(job.id, sop):
                continue
            self.journal.record_instance(
                study_uid=study, series_uid=series, sop_uid=sop, size=size, calling_ae=None, modality=_modality(path)
            )
            added += 1
        return added

    # --- the worker process -----------------------------------------------------------------------------------
    def _start_worker(self) -> None:
        from pantherseg.node.worker import run_worker

        self._worker_stop = self._context.Event()
        receive, send = self._context.Pipe(duplex=False)
        self._worker = self._context.Process(
            target=run_worker,
            name="pantherseg-node-worker",
            daemon=False,
            args=(self.config, self._worker_stop, send, os.getpid(), self.log_level),
        )
        self._worker.start()
        send.close()
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while True:
            if receive.poll(0.2):
                try:
                    message = receive.recv()
                except EOFError:
                    message = ("error", "PantherError", "the worker process ended while loading the ensemble")
                break
            if not self._worker.is_alive():
                message = (
                    "error",
                    "PantherError",
                    f"the worker process ended with exit code {self._worker.exitcode} while loading the ensemble",
                )
                break
            if self.stopping.is_set() or time.monotonic() > deadline:
                self._stop_worker()
                raise ResourceError(
                    "the ensemble did not load "
                    + ("before the stop signal" if self.stopping.is_set() else f"within {LOAD_TIMEOUT_S:g} s")
                )
        receive.close()
        if message[0] != "ready":
            self._worker.join(timeout=10)
            from pantherseg import errors

            kind = getattr(errors, message[1], PantherError)
            raise (kind if isinstance(kind, type) and issubclass(kind, PantherError) else PantherError)(message[2])
        info = message[1]
        log.info(
            "worker %d ready: task %s, members %s, %s, loaded in %.1f s; outputs %s",
            info["pid"],
            info["task"],
            ", ".join(info["members"]),
            info["device"],
            info["load_s"],
            ", ".join(info["outputs"]),
        )

    def _watch_worker(self) -> None:
        if self._worker is None or self._worker.is_alive() or self.stopping.is_set():
            return
        code = self._worker.exitcode
        log.error("the worker process died (exit code %s); restarting it", code)
        for job in self.journal.jobs(states=("segmenting", "sending")):
            if job.attempts >= MAX_WORKER_DEATHS_PER_JOB:
                self.journal.mark_failed(
                    job.id,
                    f"the worker process died {job.attempts} times on this series (last exit code {code}); not retried",
                )
            else:
                self.journal.requeue(job.id, f"the worker process died (exit code {code}); retried")
        self._start_worker()
        self._write_status("running")

    def _stop_worker(self) -> None:
        if self._worker is None:
            return
        self._worker_stop.set()
        self._worker.join(timeout=self.config.shutdown_grace_s)
        if self._worker.is_alive():
            log.warning(
                "the worker did not finish its job within %g s; stopping it and requeueing the job",
                self.config.shutdown_grace_s,
            )
            self._worker.kill()
            self._worker.join(timeout=10)
        if self.journal is not None:
            for job in self.journal.jobs(states=("segmenting", "sending")):
                self.journal.requeue(job.id, "the node stopped during this job; it resumes at the next start")
        self._worker = None

    # --- status ---------------------------------------------------------------------------------------------
    def _write_status(self, state: str) -> None:
        """``SPOOL/node.json``: who is serving (for node-status); written atomically."""
        from pantherseg import __version__

        worker = self._worker.pid if self._worker is not None and self._worker.is_alive() else None
        status = {
            "state": state,
            "pid": os.getpid(),
            "worker_pid": worker,
            "version": __version__,
            "ae_title": self.config.ae_title,
            "address": list(self.address) if self.address else None,
            "tls": self.config.tls,
            "task": self.config.task,
            "outputs": list(self.config.outputs),
            "send_to": [d.describe() for d in self.config.send_to],
            "allow_ae": [e.text() for e in self.config.allow_ae],
            "updated_at": time.time(),
        }
        path = self.spool.root / STATUS_FILE
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(json.dumps(status, indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, path)


def _modality(path: Path) -> str | None:
    try:
        import pydicom

        return (
            str(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality"]).get("Modality", "")) or None
        )
    except Exception:  # noqa: BLE001 - an unreadable file is the worker's to report, as a failed job
        return None
