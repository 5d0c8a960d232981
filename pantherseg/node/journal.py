"""The node's journal: every study, instance and job in SQLite (WAL), so a restart resumes what was unfinished.

A job is one series' segmentation and delivery. Its states, in order:

    received    instances of the series are arriving (at most one such job per series)
    queued      the series is complete (timeout or association release) and waits for the worker
    segmenting  the worker holds it
    sending     its results are written (``outputs``) and are being delivered
    sent        every result reached every destination it goes to
    failed      with ``reason``: one line (a bad series, a delivery that ran out of retries)

On start (:meth:`Journal.recover`): ``segmenting`` and ``sending`` jobs go back to ``queued`` (a job with
results written is only delivered again), and ``received`` series restart their completion timer.
One connection per thread and per process (SQLite connections are not shared); every write is one
transaction. Times are wall-clock seconds since the epoch (``time.time``), for people and monitors.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

STATES = ("received", "queued", "segmenting", "sending", "sent", "failed")
UNFINISHED = ("received", "queued", "segmenting", "sending")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    study_uid TEXT PRIMARY KEY,
    patient_id TEXT,
    first_received_at REAL NOT NULL,
    last_received_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    study_uid TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    modality TEXT,
    calling_ae TEXT,
    state TEXT NOT NULL,
    reason TEXT,
    instances INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    received_at REAL NOT NULL,
    last_instance_at REAL NOT NULL,
    queued_at REAL,
    started_at REAL,
    segmented_at REAL,
    finished_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    outputs TEXT,
    deliveries TEXT,
    timings TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, queued_at, id);
CREATE INDEX IF NOT EXISTS jobs_series ON jobs (series_uid, state);
CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT NOT NULL,
    job_id INTEGER NOT NULL REFERENCES jobs (id),
    bytes INTEGER NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (job_id, sop_uid)
);
CREATE TABLE IF NOT EXISTS refusals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    calling_ae TEXT,
    address TEXT,
    what TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Job:
    id: int
    study_uid: str
    series_uid: str
    state: str
    instances: int
    bytes: int
    received_at: float
    last_instance_at: float
    modality: str | None = None
    calling_ae: str | None = None
    reason: str | None = None
    queued_at: float | None = None
    started_at: float | None = None
    segmented_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0
    outputs: dict | None = None  # output format -> path
    deliveries: list | None = None  # one entry per (file, destination), as the sender reported
    timings: dict | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class Journal:
    """The SQLite journal at ``path``; an instance may be used from several threads of one process."""

    def __init__(self, path: Path | str, *, clock=time.time):
        self.path = Path(path)
        self.clock = clock
        self._local = threading.local()
        self._db().executescript(_SCHEMA)  # idempotent: CREATE ... IF NOT EXISTS

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            self._local.db = db
        return db

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    class _Transaction:
        def __init__(self, db: sqlite3.Connection):
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, kind, value, traceback) -> None:
            self.db.execute("COMMIT" if kind is None else "ROLLBACK")

    def _transaction(self) -> "_Transaction":
        return Journal._Transaction(self._db())

    # --- receiving ------------------------------------------------------------------------------------------
    def open_job(self, series_uid: str) -> Job | None:
        """The series' job still receiving instances, if any."""
        row = (
            self._db()
            .execute("SELECT * FROM jobs WHERE series_uid = ? AND state = 'received'", (series_uid,))
            .fetchone()
        )
        return _job(row)

    def record_instance(
        self,
        *,
        study_uid: str,
        series_uid: str,
        sop_uid: str,
        size: int,
        calling_ae: str | None,
        modality: str | None = None,
        patient_id: str | None = None,
    ) -> Job:
        """An instance is on disk: add it to its series' open job (made if none). A resent instance replaces
        its earlier copy (same SOP Instance UID, counted once)."""
        now = self.clock()
        with self._transaction() as db:
            db.execute(
                "INSERT INTO studies VALUES (?, ?, ?, ?) ON CONFLICT (study_uid) DO UPDATE SET "
                "last_received_at = excluded.last_received_at, "
                "patient_id = COALESCE(studies.patient_id, excluded.patient_id)",
                (study_uid, patient_id, now, now),
            )
            row = db.execute(
                "SELECT id FROM jobs WHERE series_uid = ? AND state = 'received'", (series_uid,)
            ).fetchone()
            if row is None:
                job_id = db.execute(
                    "INSERT INTO jobs (study_uid, series_uid, modality, calling_ae, state, "
                    "received_at, last_instance_at) VALUES (?, ?, ?, ?, 'received', ?, ?)",
                    (study_uid, series_uid, modality, calling_ae, now, now),
                ).lastrowid
            else:
                job_id = row["id"]
            db.execute(
                "INSERT INTO instances VALUES (?, ?, ?, ?) ON CONFLICT (job_id, sop_uid) DO UPDATE SET "
                "bytes = excluded.bytes, received_at = excluded.received_at",
                (sop_uid, job_id, size, now),
            )
            db.execute(
                "UPDATE jobs SET last_instance_at = ?, modality = COALESCE(modality, ?), "
                "instances = (SELECT COUNT(*) FROM instances WHERE job_id = ?), "
                "bytes = (SELECT COALESCE(SUM(bytes), 0) FROM instances WHERE job_id = ?) WHERE id = ?",
                (now, modality, job_id, job_id, job_id),
            )
        return self.job(job_id)

    def has_instance(self, job_id: int, sop_uid: str) -> bool:
        return (
            self._db().execute("SELECT 1 FROM instances WHERE job_id = ? AND sop_uid = ?", (job_id, sop_uid)).fetchone()
            is not None
        )

    def due_for_completion(self, older_than: float) -> list[Job]:
        """Receiving jobs whose last instance arrived before ``older_than``."""
        rows = (
            self._db()
            .execute(
                "SELECT * FROM jobs WHERE state = 'received' AND last_instance_at < ? ORDER BY last_instance_at, id",
                (older_than,),
            )
            .fetchall()
        )
        return [_job(row) for row in rows]

    def queue(self, job_id: int) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET state = 'queued', queued_at = ? WHERE id = ? AND state = 'received'",
                (self.clock(), job_id),
            )

    # --- the worker ---------------------------------------------------------------------------------------------
    def claim_next(self) -> Job | None:
        """The oldest queued job, now ``segmenting`` (one transaction: two workers never take the same one)."""
        with self._transaction() as db:
            row = db.execute("SELECT id FROM jobs WHERE state = 'queued' ORDER BY queued_at, id LIMIT 1").fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE jobs SET state = 'segmenting', started_at = ?, attempts = attempts + 1 WHERE id = ?",
                (self.clock(), row["id"]),
            )
        return self.job(row["id"])

    def mark_sending(self, job_id: int, outputs: dict[str, str], timings: dict | None = None) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET state = 'sending', segmented_at = ?, outputs = ?, timings = ? WHERE id = ?",
                (self.clock(), json.dumps(outputs), json.dumps(timings or {}), job_id),
            )

    def mark_sent(self, job_id: int, deliveries: list) -> None:
        self._finish(job_id, "sent", None, deliveries)

    def mark_failed(self, job_id: int, reason: str, deliveries: list | None = None) -> None:
        self._finish(job_id, "failed", " ".join(str(reason).split()), deliveries)

    def _finish(self, job_id: int, state: str, reason: str | None, deliveries: list | None) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET state = ?, reason = ?, finished_at = ?, "
                "deliveries = COALESCE(?, deliveries) WHERE id = ?",
                (state, reason, self.clock(), None if deliveries is None else json.dumps(deliveries), job_id),
            )

    def requeue(self, job_id: int, why: str) -> None:
        """A job the worker did not finish (stopped, or the worker died) waits again, with the reason noted."""
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET state = 'queued', reason = ? WHERE id = ? AND state IN ('segmenting', 'sending')",
                (" ".join(why.split()), job_id),
            )

    # --- start-up ----------------------------------------------------------------------------------------------
    def recover(self) -> dict[str, int]:
        """After a stop or a crash: unfinished work resumes. Returns how many jobs of each kind."""
        now = self.clock()
        with self._transaction() as db:
            held = db.execute(
                "UPDATE jobs SET state = 'queued', reason = 'requeued at start: the node stopped "
                "while it held this job' WHERE state IN ('segmenting', 'sending')"
            ).rowcount
            receiving = db.execute("UPDATE jobs SET last_instance_at = ? WHERE state = 'received'", (now,)).rowcount
            queued = db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'queued'").fetchone()[0]
        return {"requeued": held, "receiving": receiving, "queued": queued}

    def record_refusal(
        self, *, calling_ae: str | None, address: str | None, what: str, status: str, reason: str
    ) -> None:
        """A refused association or store (allow-list, limits, SOP class), for node-status and monitors."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO refusals (at, calling_ae, address, what, status, reason) VALUES (?, ?, ?, ?, ?, ?)",
                (self.clock(), calling_ae, address, what, status, " ".join(reason.split())),
            )

    def refusals(self, limit: int = 20) -> list[dict]:
        rows = self._db().execute("SELECT * FROM refusals ORDER BY id DESC LIMIT ?", (int(limit),)).fetchall()
        return [dict(row) for row in rows]

    # --- reading ----------------------------------------------------------------------------------------------
    def job(self, job_id: int) -> Job | None:
        return _job(self._db().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())

    def jobs(self, *, states: tuple[str, ...] | None = None, limit: int | None = None) -> list[Job]:
        query, args = "SELECT * FROM jobs", []
        if states:
            query += f" WHERE state IN ({','.join('?' * len(states))})"
            args.extend(states)
        query += " ORDER BY id DESC"
        if limit is not None:
            query += " LIMIT ?"
            args.append(int(limit))
        return [_job(row) for row in self._db().execute(query, args).fetchall()]

    def counts(self) -> dict[str, int]:
        rows = self._db().execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state").fetchall()
        found = {row["state"]: row["n"] for row in rows}
        return {state: found.get(state, 0) for state in STATES}

    def studies(self) -> int:
        return self._db().execute("SELECT COUNT(*) FROM studies").fetchone()[0]


def _job(row) -> Job | None:
    if row is None:
        return None
    data = dict(row)
    for key in ("outputs", "deliveries", "timings"):
        data[key] = None if data[key] is None else json.loads(data[key])
    return Job(**data)
