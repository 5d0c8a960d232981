"""Deliver a job's result files (SEG, RTSTRUCT, SR) to its destinations, with retries and a dead letter.

``Sender(destinations, dead_letter_dir, policy).deliver(job_id, files, kinds)`` sends each file to every
destination whose ``outputs`` accept its kind and returns one ``Delivery`` per destination. It never raises
for a failed delivery (an unreachable node, a refused association, a failure status, an HTTP error): that is a
``Delivery`` with ``ok=False`` and the reason. It raises only for programming errors (a bad job id, an
unknown kind in ``kinds``).

- **C-STORE** (``kind`` "dimse", pynetdicom): one association per destination per attempt, calling AE
  ``calling_ae``; one presentation context per SOP class of the files, offering each file's own transfer syntax
  and, for uncompressed ones, Explicit and Implicit VR Little Endian (pynetdicom converts between uncompressed
  syntaxes). Every C-STORE response status is checked: success (0x0000) and warnings (0xB000, 0xB006, 0xB007,
  kept in ``Delivery.warnings``) deliver the instance; any failure status, a missing response (timeout, abort)
  or no accepted context for the file does not. TLS (``tls=yes``): an ``ssl`` client context that checks the
  peer's certificate and host name (the destination's ``ca_file`` or the system's CAs), or the
  ``ssl_context`` given to the Sender.
- **STOW-RS** (``kind`` "dicomweb", dicomweb-client): one POST of all pending instances to ``<url>/studies``.
  The response's Store Instances Response Module is checked: an instance is delivered only if it is listed in
  ReferencedSOPSequence (its WarningReason kept as a warning); one in FailedSOPSequence, or absent from
  both, is not. HTTP errors and connection failures are failures of the attempt. dicomweb-client's own retries
  are off: ours below apply.

Retries: up to ``policy.attempts`` attempts per destination; after attempt k fails, wait
``min(first_delay_s * factor**(k-1), max_delay_s)``. Each retry sends only the instances not yet delivered.
After the last attempt the undelivered files are copied to ``dead_letter_dir/<job_id>/<destination slug>/``
with ``reason.json`` (destination, attempts, last error, every attempt's error, what was delivered). A
``stop`` event (SIGTERM) ends the waiting: the Delivery is then ``interrupted`` (not dead-lettered), so the
caller can requeue the job. ``sleep`` and ``clock`` are injectable for tests.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pantherseg.errors import ConfigError, one_line
from pantherseg.node.destinations import OUTPUT_KINDS, Destination, check_ae_title

LOG = logging.getLogger(__name__)

SOP_CLASS_KINDS = {
    "1.2.840.10008.5.1.4.1.1.66.4": "seg",  # Segmentation Storage
    "1.2.840.10008.5.1.4.1.1.481.3": "rtstruct",  # RT Structure Set Storage
    "1.2.840.10008.5.1.4.1.1.88.11": "sr",  # Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22": "sr",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33": "sr",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.34": "sr",  # Comprehensive 3D SR
}
WARNING_STATUSES = {
    0xB000: "coercion of data elements",
    0xB006: "elements discarded",
    0xB007: "data set does not match SOP class",
}
REASON_FILE = "reason.json"
_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one destination is tried: ``attempts`` in all (1 = no retry), the waits between them
    (``first_delay_s``, times ``factor`` after each failure, at most ``max_delay_s``), and ``timeout_s`` for
    each network step (connect, association, DIMSE response, HTTP request)."""

    attempts: int = 5
    first_delay_s: float = 5.0
    factor: float = 2.0
    max_delay_s: float = 300.0
    timeout_s: float = 30.0

    def __post_init__(self):
        if not isinstance(self.attempts, int) or isinstance(self.attempts, bool) or not 1 <= self.attempts <= 100:
            raise ConfigError(f"Retry policy: attempts must be an integer 1-100, not {self.attempts!r}")
        for name in ("first_delay_s", "max_delay_s", "timeout_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 86400:
                raise ConfigError(f"Retry policy: {name} must be a number of seconds 0-86400, not {value!r}")
        if self.timeout_s <= 0:
            raise ConfigError(f"Retry policy: timeout_s must be above 0, not {self.timeout_s!r}")
        if not isinstance(self.factor, (int, float)) or isinstance(self.factor, bool) or not 1 <= self.factor <= 10:
            raise ConfigError(f"Retry policy: factor must be a number 1-10, not {self.factor!r}")

    def delay(self, failed_attempt: int) -> float:
        """Seconds to wait after attempt ``failed_attempt`` (1-based) failed, before the next one."""
        return float(min(self.first_delay_s * self.factor ** (failed_attempt - 1), self.max_delay_s))


@dataclass(frozen=True)
class Delivery:
    """What happened to one job's results at one destination.

    ``files``: the files routed there; ``delivered``: the SOP Instance UIDs it accepted; ``attempts``: 0 when
    nothing was routed there (then ``ok`` is True) or nothing could be read; ``error``: the last attempt's
    one-line reason (None when ok); ``errors``: every failed attempt's reason; ``dead_letter``: the folder
    holding the undelivered files and ``reason.json``; ``interrupted``: the stop event ended the retries."""

    job_id: str
    destination: Destination
    ok: bool
    files: tuple[Path, ...]
    attempts: int
    delivered: tuple[str, ...] = ()
    error: str | None = None
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    dead_letter: Path | None = None
    interrupted: bool = False
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """For the journal and the node's status: plain JSON types only."""
        return {
            "job_id": self.job_id,
            "destination": self.destination.to_json(),
            "describe": self.destination.describe(),
            "ok": self.ok,
            "files": [str(path) for path in self.files],
            "attempts": self.attempts,
            "delivered": list(self.delivered),
            "error": self.error,
            "errors": list(self.errors),
            "warnings": list(self.warnings),
            "dead_letter": None if self.dead_letter is None else str(self.dead_letter),
            "interrupted": self.interrupted,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class _Item:
    """One result file, read once: what routing and the transports need."""

    path: Path
    kind: str | None
    sop_class: str = ""
    sop_instance: str = ""
    transfer_syntax: str = ""
    unreadable: str | None = None


@dataclass
class _Attempt:
    """The outcome of one attempt at one destination."""

    delivered: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None


class Sender:
    """Sends result files to ``destinations``; see the module docstring. Thread-compatible, not thread-safe:
    one ``deliver`` at a time (the node's worker)."""

    def __init__(
        self,
        destinations: Sequence[Destination],
        dead_letter_dir: Path,
        policy: RetryPolicy = RetryPolicy(),
        calling_ae: str = "PANTHERSEG",
        *,
        ssl_context: ssl.SSLContext | None = None,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        stop: threading.Event | None = None,
    ):
        if not all(isinstance(dest, Destination) for dest in destinations):
            raise TypeError("destinations must be Destination objects (parse_destination / load_destination)")
        if not isinstance(policy, RetryPolicy):
            raise TypeError(f"policy must be a RetryPolicy, not {type(policy).__name__}")
        check_ae_title(calling_ae, "Calling AE title")
        self.destinations = tuple(destinations)
        self.dead_letter_dir = Path(dead_letter_dir)
        self.policy = policy
        self.calling_ae = calling_ae
        self.ssl_context = ssl_context
        self.stop = stop
        self._sleep = sleep if sleep is not None else self._wait
        self._clock = clock

    def deliver(self, job_id: str, files: Sequence[Path], kinds: Mapping[Path, str] | None = None) -> list[Delivery]:
        """Send ``files`` to every destination that accepts their kinds; one Delivery per destination, in order.

        ``kinds`` maps a file to "seg", "rtstruct" or "sr"; a file not in it gets its kind from its SOP Class
        UID (SEG, RTSTRUCT, any SR), and a file of no known kind goes only to destinations without ``outputs``."""
        if not isinstance(job_id, str) or not _JOB_ID.match(job_id) or ".." in job_id:
            raise ValueError(f"job_id must be 1-128 letters, digits, '.', '_' or '-' (a folder name), not {job_id!r}")
        kinds = {Path(path): kind for path, kind in (kinds or {}).items()}
        bad = {kind for kind in kinds.values() if kind not in OUTPUT_KINDS}
        if bad:
            raise ValueError(f"kinds must be among {', '.join(OUTPUT_KINDS)}, found {sorted(map(repr, bad))}")
        items = [_read_item(Path(path), kinds.get(Path(path))) for path in files]
        return [
            self._deliver_one(job_id, dest, [item for item in items if _routed(dest, item)])
            for dest in self.destinations
        ]

    def _deliver_one(self, job_id: str, dest: Destination, items: list[_Item]) -> Delivery:
        start = self._clock()
        files = tuple(item.path for item in items)
        unreadable = [item for item in items if item.unreadable]
        if unreadable:
            error = unreadable[0].unreadable
            return self._dead(job_id, dest, files, items, 0, [], [], [error], start)
        pending, delivered, warnings, errors = list(items), [], [], []
        for attempt in range(1, self.policy.attempts + 1):
            if not pending:
                break
            if self.stop is not None and self.stop.is_set():
                return Delivery(
                    job_id,
                    dest,
                    False,
                    files,
                    attempt - 1,
                    tuple(delivered),
                    errors[-1] if errors else "stopped before the first attempt",
                    tuple(errors),
                    tuple(warnings),
                    None,
                    True,
                    self._clock() - start,
                )
            outcome = self._attempt(dest, pending)
            delivered += outcome.delivered
            warnings += outcome.warnings
            pending = [item for item in pending if item.sop_instance not in set(delivered)]
            if not pending:
                LOG.info("%s: job %s delivered (%d file(s), attempt %d)", dest.describe(), job_id, len(files), attempt)
                return Delivery(
                    job_id,
                    dest,
                    True,
                    files,
                    attempt,
                    tuple(delivered),
                    None,
                    tuple(errors),
                    tuple(warnings),
                    None,
                    False,
                    self._clock() - start,
                )
            errors.append(outcome.error or f"{len(pending)} instance(s) not delivered")
            LOG.warning(
                "%s: job %s attempt %d/%d failed: %s",
                dest.describe(),
                job_id,
                attempt,
                self.policy.attempts,
                errors[-1],
            )
            if attempt < self.policy.attempts:
                self._sleep(self.policy.delay(attempt))
        if not items:
            return Delivery(job_id, dest, True, (), 0, seconds=self._clock() - start)
        return self._dead(job_id, dest, files, pending, len(errors), delivered, warnings, errors, start)

    def _attempt(self, dest: Destination, items: list[_Item]) -> _Attempt:
        try:
            return self._c_store(dest, items) if dest.kind == "dimse" else self._stow(dest, items)
        except (OSError, ssl.SSLError, ValueError, RuntimeError) as error:  # a transport broke mid-way
            return _Attempt(error=f"{type(error).__name__}: {one_line(error)}")

    def _wait(self, seconds: float) -> None:
        if self.stop is not None:
            self.stop.wait(seconds)
        else:
            time.sleep(seconds)

    # --- C-STORE --------------------------------------------------------------------------------------

    def _c_store(self, dest: Destination, items: list[_Item]) -> _Attempt:
        from pynetdicom import AE  # lazy: the extra pantherseg[dicom]

        ae = AE(ae_title=self.calling_ae)
        for name in ("acse_timeout", "dimse_timeout", "network_timeout", "connection_timeout"):
            setattr(ae, name, self.policy.timeout_s)
        contexts = _contexts(items)
        if len(contexts) > 128:
            return _Attempt(error=f"{len(contexts)} SOP classes in one job; an association offers at most 128")
        for sop_class, syntaxes in contexts.items():
            ae.add_requested_context(sop_class, syntaxes)
        tls_args = (self._tls_context(dest), dest.host) if dest.tls else None
        assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title, tls_args=tls_args)
        if not assoc.is_established:
            return _Attempt(error=_refusal(assoc, dest))
        try:
            return _store_each(assoc, dest, items)
        finally:
            if assoc.is_established:
                assoc.release()

    def _tls_context(self, dest: Destination) -> ssl.SSLContext:
        if self.ssl_context is not None:
            return self.ssl_context
        return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=dest.ca_file)

    # --- STOW-RS --------------------------------------------------------------------------------------

    def _stow(self, dest: Destination, items: list[_Item]) -> _Attempt:
        import pydicom
        import requests
        from dicomweb_client.api import DICOMwebClient

        session = requests.Session()
        session.verify = dest.ca_file if dest.ca_file else True
        client = DICOMwebClient(url=dest.url, session=session, timeout=self.policy.timeout_s)
        client.set_http_retry_params(retry=False)
        datasets = [pydicom.dcmread(item.path) for item in items]
        try:
            response = client.store_instances(datasets)
        except requests.HTTPError as error:
            return _Attempt(error=_http_error(dest, error))
        except requests.RequestException as error:
            return _Attempt(error=f"{dest.url}: {type(error).__name__}: {one_line(error)}")
        finally:
            session.close()
        return _stow_outcome(dest, items, response)

    # --- dead letter ----------------------------------------------------------------------------------

    def _dead(self, job_id, dest, files, pending, attempts, delivered, warnings, errors, start) -> Delivery:
        folder, note = self._write_dead_letter(job_id, dest, pending, attempts, delivered, errors)
        error = errors[-1] + (f"; {note}" if note else "")
        LOG.error("%s: job %s not delivered after %d attempt(s): %s", dest.describe(), job_id, attempts, error)
        return Delivery(
            job_id,
            dest,
            False,
            files,
            attempts,
            tuple(delivered),
            error,
            tuple(errors),
            tuple(warnings),
            folder,
            False,
            self._clock() - start,
        )

    def _write_dead_letter(self, job_id, dest, pending, attempts, delivered, errors) -> tuple[Path | None, str | None]:
        """Copy the undelivered files and reason.json into a fresh folder, renamed into place when complete."""
        parent = self.dead_letter_dir / job_id
        try:
            parent.mkdir(parents=True, exist_ok=True)
            target = _free_name(parent / dest.slug())
            staging = parent / f".{target.name}.partial"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            copied = []
            for item in pending:
                if item.path.is_file():
                    shutil.copy2(item.path, staging / item.path.name)
                    copied.append(item.path.name)
            reason = {
                "job_id": job_id,
                "destination": dest.to_json(),
                "describe": dest.describe(),
                "attempts": attempts,
                "last_error": errors[-1],
                "errors": errors,
                "delivered": list(delivered),
                "files": copied,
                "missing": [str(item.path) for item in pending if item.path.name not in copied],
                "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            (staging / REASON_FILE).write_text(json.dumps(reason, indent=2) + "\n", encoding="utf-8")
            os.replace(staging, target)
            return target, None
        except OSError as error:
            return None, f"the dead letter could not be written in {parent}: {one_line(error)}"


def _read_item(path: Path, kind: str | None) -> _Item:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
        sop_class, sop_instance = str(header.SOPClassUID), str(header.SOPInstanceUID)
        syntax = str(header.file_meta.TransferSyntaxUID)
    except (OSError, InvalidDicomError, AttributeError, ValueError) as error:
        return _Item(
            path, kind, unreadable=f"result file {path} cannot be read: {type(error).__name__}: {one_line(error)}"
        )
    return _Item(path, kind or SOP_CLASS_KINDS.get(sop_class), sop_class, sop_instance, syntax)


def _routed(dest: Destination, item: _Item) -> bool:
    return dest.outputs is None or (item.kind is not None and dest.accepts(item.kind))


def _contexts(items: list[_Item]) -> dict[str, list[str]]:
    """SOP class -> the transfer syntaxes to offer for it (the files' own first, then uncompressed fallbacks)."""
    from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    contexts: dict[str, list[str]] = {}
    for item in items:
        syntaxes = contexts.setdefault(item.sop_class, [])
        extra = [item.transfer_syntax]
        if not UID(item.transfer_syntax).is_compressed:
            extra += [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        syntaxes += [syntax for syntax in extra if syntax not in syntaxes]
    return contexts


def _refusal(assoc, dest: Destination) -> str:
    where = f"{dest.ae_title}@{dest.host}:{dest.port}"
    primitive = getattr(assoc.acceptor, "primitive", None)
    if assoc.is_rejected and primitive is not None:
        return (
            f"association rejected by {where} ({primitive.result_str}, source {primitive.source_str}: "
            f"{primitive.reason_str})"
        )
    if assoc.is_aborted and primitive is not None:
        return f"association with {where} aborted: no presentation context accepted for the result files"
    if assoc.is_aborted:
        return f"no association with {where}: connection refused, closed or timed out"
    return f"no association with {where}: no reply within {assoc.acse_timeout} s"


def _store_each(assoc, dest: Destination, items: list[_Item]) -> _Attempt:
    from pynetdicom.status import code_to_category

    outcome = _Attempt()
    failures = []
    for item in items:
        try:
            status = assoc.send_c_store(item.path)
        except ValueError as error:  # no accepted presentation context for this SOP class / syntax
            failures.append(f"{item.path.name}: {one_line(error)}")
            continue
        if "Status" not in status:
            failures.append(f"{item.path.name}: no C-STORE response from {dest.ae_title} (timeout or abort)")
            break
        code = int(status.Status)
        category = code_to_category(code)
        if category == "Success":
            outcome.delivered.append(item.sop_instance)
        elif category == "Warning":
            outcome.delivered.append(item.sop_instance)
            outcome.warnings.append(
                f"{item.path.name}: C-STORE warning 0x{code:04X} ({WARNING_STATUSES.get(code, 'warning')})"
            )
        else:
            comment = f", {status.ErrorComment}" if "ErrorComment" in status else ""
            failures.append(f"{item.path.name}: C-STORE status 0x{code:04X} ({category}{comment})")
    if failures:
        outcome.error = (
            f"{dest.ae_title}@{dest.host}:{dest.port}: {len(failures)} of {len(items)} not stored; "
            + "; ".join(failures[:3])
        )
    return outcome


def _http_error(dest: Destination, error) -> str:
    response = error.response
    code = response.status_code if response is not None else "?"
    body = one_line(response.text, default="") if response is not None else ""
    return f"{dest.url}: HTTP {code} {getattr(response, 'reason', '')}".rstrip() + (f": {body[:200]}" if body else "")


def _stow_outcome(dest: Destination, items: list[_Item], response) -> _Attempt:
    """Check the Store Instances Response: referenced instances are delivered, failed or missing ones are not."""
    outcome = _Attempt()
    sent = {item.sop_instance for item in items}
    referenced = {}
    for entry in response.get("ReferencedSOPSequence", []):
        uid = str(entry.get("ReferencedSOPInstanceUID", ""))
        referenced[uid] = entry
        if "WarningReason" in entry:
            outcome.warnings.append(f"{uid}: STOW-RS warning reason 0x{int(entry.WarningReason):04X}")
    failed = {str(entry.get("ReferencedSOPInstanceUID", "")): entry for entry in response.get("FailedSOPSequence", [])}
    outcome.delivered = [
        uid for uid in (item.sop_instance for item in items) if uid in referenced and uid not in failed
    ]
    problems = [
        f"{uid}: failure reason 0x{int(entry.FailureReason):04X}" if "FailureReason" in entry else f"{uid}: failed"
        for uid, entry in failed.items()
        if uid in sent
    ]
    missing = [
        item.sop_instance for item in items if item.sop_instance not in referenced and item.sop_instance not in failed
    ]
    if missing:
        problems.append(
            f"{len(missing)} instance(s) not acknowledged in the STOW-RS response ({', '.join(missing[:3])})"
        )
    if problems:
        outcome.error = f"{dest.url}: {len(sent) - len(outcome.delivered)} of {len(sent)} not stored; " + "; ".join(
            problems[:3]
        )
    return outcome


def _free_name(path: Path) -> Path:
    """``path`` or ``path-2``, ``path-3``, ...: an existing dead letter (an earlier run of the job) is kept."""
    candidate, number = path, 1
    while candidate.exists():
        number += 1
        candidate = path.with_name(f"{path.name}-{number}")
    return candidate
