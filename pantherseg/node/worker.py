"""The node's worker process: the ensemble loaded once, the queue segmented in order, results delivered.

:func:`run_worker` is the process' target (``multiprocessing`` spawn context, started by
pantherseg.node.service). It reports ``("ready", info)`` or ``("error", kind, message)`` on its pipe once the
ensemble is loaded, then takes the oldest queued job from the journal, segments its series
(pantherseg.node.segmenter), hands the files to the Sender (pantherseg.node.sender) and records the outcome.
A bad series (not MR, corrupt, unreadable, refused by the DICOM writers) is a ``failed`` job with its one-line
reason; the next job goes on. It stops between jobs when the service sets ``stop``; SIGTERM and SIGINT are
ignored here (the service decides: finish the job within the grace time, or kill this process and requeue it).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from pantherseg.errors import PantherError
from pantherseg.node.config import OUTPUT_KIND, NodeConfig
from pantherseg.node.journal import Job, Journal
from pantherseg.node.spool import Spool
from pantherseg.options import RunOptions

log = logging.getLogger(__name__)

POLL_S = 0.2


@dataclass
class JobWorker:
    """Segments and delivers jobs; built in the worker process (tests build it in process)."""

    config: NodeConfig
    spool: Spool
    journal: Journal
    segmenter: object  # pantherseg.node.segmenter.Segmenter (or a test double with the same ``segment``)
    sender: object  # pantherseg.node.sender.Sender

    def run_once(self) -> Job | None:
        """Take and finish the next queued job; None if the queue is empty."""
        job = self.journal.claim_next()
        if job is None:
            return None
        self.process(job)
        return self.journal.job(job.id)

    def process(self, job: Job) -> None:
        started = time.perf_counter()
        outputs = self._written_outputs(job)
        if outputs is None:
            try:
                outputs, timings = self._segment(job)
            except PantherError as error:
                self._failed(job, str(error))
                return
            except MemoryError:
                self._failed(job, "out of memory while segmenting; give the node more RAM")
                return
            except Exception as error:  # noqa: BLE001 - one broken series must not stop the node; reported
                log.exception("job %d: unexpected error", job.id)
                self._failed(job, f"unexpected {type(error).__name__}: {' '.join(str(error).split())}")
                return
            self.journal.mark_sending(job.id, {k: str(v) for k, v in outputs.items()}, timings)
        else:
            log.info("job %d: results already written before a restart; delivering them again", job.id)
        self._deliver(job, outputs, started)

    def _written_outputs(self, job: Job) -> dict[str, Path] | None:
        """The job's results when a previous run wrote them all (a restart during delivery)."""
        if not job.outputs:
            return None
        paths = {kind: Path(path) for kind, path in job.outputs.items()}
        return paths if all(path.is_file() for path in paths.values()) else None

    def _segment(self, job: Job) -> tuple[dict[str, Path], dict]:
        if job.modality is not None and job.modality != "MR":
            raise PantherError(
                f"series {job.series_uid} has Modality '{job.modality}', not MR: the ensemble segments MRI only"
            )
        folder = self.spool.job_input(job.id)
        if not folder.is_dir():
            raise PantherError(f"series {job.series_uid}: its instances are gone from {folder}")
        result = self.segmenter.segment(folder, self.spool.job_output(job.id), name=job.series_uid)
        timings = {"segment_s": round(result.seconds, 3), **result.report.timings_s}
        log.info(
            "job %d: series %s segmented in %.1f s (tumour %.2f ml)",
            job.id,
            job.series_uid,
            result.seconds,
            result.report.tumor_volume_ml,
        )
        return result.paths, timings

    def _deliver(self, job: Job, outputs: dict[str, Path], started: float) -> None:
        kinds = {path: OUTPUT_KIND[fmt] for fmt, path in outputs.items() if fmt in OUTPUT_KIND}
        deliveries = self.sender.deliver(str(job.id), list(outputs.values()), kinds)
        records = [delivery.to_json() for delivery in deliveries]
        if any(delivery.interrupted for delivery in deliveries):
            self.journal.requeue(job.id, "stopped during delivery; resumes at the next start")
            log.warning("job %d: delivery interrupted by shutdown; requeued", job.id)
            return
        failed = [delivery for delivery in deliveries if not delivery.ok]
        if failed:
            reason = "; ".join(
                f"not delivered to {d.destination.describe()} after {d.attempts} attempt(s): "
                f"{d.error}" + (f" (dead letter: {d.dead_letter})" if d.dead_letter else "")
                for d in failed
            )
            self._failed(job, reason, records)
            return
        self.journal.mark_sent(job.id, records)
        if not self.config.keep_received:
            self.spool.remove_job_input(job.id)
        log.info(
            "job %d: sent to %d destination(s) in %.1f s after it was taken",
            job.id,
            len(deliveries),
            time.perf_counter() - started,
        )

    def _failed(self, job: Job, reason: str, deliveries: list | None = None) -> None:
        self.journal.mark_failed(job.id, reason, deliveries)
        log.error("job %d (series %s) failed: %s", job.id, job.series_uid, " ".join(reason.split()))


def build_sender(config: NodeConfig, spool: Spool, stop=None):
    from pantherseg.node.sender import RetryPolicy, Sender

    policy = RetryPolicy(attempts=config.retries + 1, first_delay_s=config.backoff_s, max_delay_s=config.backoff_max_s)
    return Sender(config.send_to, spool.dead_letter, policy, calling_ae=config.ae_title, stop=stop)


def build_segmenter(config: NodeConfig):
    from pantherseg.node.segmenter import Segmenter

    return Segmenter(
        RunOptions(
            task=config.task,
            output_formats=tuple(config.outputs),
            weights=config.weights,
            config=config.config,
            device=config.device,
            time_budget_s=config.time_budget_s,
            roi_name=config.roi_name,
        )
    )


def run_worker(config: NodeConfig, stop, pipe, parent_pid: int, log_level: int = logging.INFO) -> None:
    """The worker process: load, report readiness on ``pipe``, then jobs until ``stop`` is set."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s [worker] %(message)s", datefmt="%H:%M:%S")
    for name in ("nnunetv2", "highdicom", "pynetdicom"):
        logging.getLogger(name).setLevel(logging.WARNING)
    spool = Spool(config.spool)
    try:
        segmenter = build_segmenter(config)
        sender = build_sender(config, spool, stop)
    except PantherError as error:
        pipe.send(("error", type(error).__name__, str(error)))
        return
    journal = Journal(spool.journal_path)
    pipe.send(("ready", {"pid": os.getpid(), **segmenter.describe()}))
    worker = JobWorker(config=config, spool=spool, journal=journal, segmenter=segmenter, sender=sender)
    while not stop.is_set() and os.getppid() == parent_pid:
        if worker.run_once() is None:
            stop.wait(POLL_S)
    journal.close()
