"""The node's DICOM SCP (pynetdicom): C-ECHO, and C-STORE of MR images into the spool.

- Association: the called AE title must be the node's; the calling AE title (and host, for ``AE@HOST``
  entries) must be on the allow-list, else A-ASSOCIATE-RJ (rejected permanent, service user, "calling AE
  title not recognised"; "called AE title not recognised" for a wrong called AE).
- C-STORE: every storage SOP class is negotiated so that a refusal is a status the sender sees, not a
  missing presentation context: MR Image Storage and Enhanced MR Image Storage are stored; any other SOP
  class is answered 0x0122 (SOP class not supported). Limits are answered 0xA700 (out of resources):
  instances per association, bytes per series, the spool's disk watermark; a data set whose UIDs are
  missing or malformed 0xC000 (cannot understand), one whose SOP Class UID differs from the context's
  0xA900. Each refusal is logged and journaled.
- Success (0x0000) is answered only after the instance is on disk (fsynced and renamed, pantherseg.node.spool)
  and in the journal. The bytes are stored as received (no decoding and re-encoding).
- Association release queues the series it brought (pantherseg.node.completion), unless
  ``complete_on_release`` is off or another association is still sending one of them.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field

from pantherseg.dicom.series import DECODABLE_TRANSFER_SYNTAXES
from pantherseg.errors import InputError, ResourceError
from pantherseg.node.completion import Completer
from pantherseg.node.config import NodeConfig
from pantherseg.node.journal import Journal
from pantherseg.node.spool import Spool, check_uid

log = logging.getLogger(__name__)

EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"

MR_STORAGE = {
    "1.2.840.10008.5.1.4.1.1.4": "MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image Storage",
}
# What pantherseg.dicom decodes (docs/dicom.md), Explicit VR Little Endian first; offered for the MR classes only.
MR_TRANSFER_SYNTAXES = (
    EXPLICIT_VR_LITTLE_ENDIAN,
    *(uid for uid in DECODABLE_TRANSFER_SYNTAXES if uid != EXPLICIT_VR_LITTLE_ENDIAN),
)
SUCCESS = 0x0000
SOP_CLASS_NOT_SUPPORTED = 0x0122
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
VERIFICATION = "1.2.840.10008.1.1"
CLOSED_KEPT = 64  # closed connections remembered for a release handled after the close


@dataclass
class _Association:
    calling_ae: str
    address: str
    instances: int = 0
    jobs: set[int] = field(default_factory=set)


class StoreSCP:
    """Listens on ``config.bind:config.port``; :meth:`start`, then :meth:`stop` (stop accepting, let the open
    associations finish for ``grace_s``, abort the rest)."""

    def __init__(self, config: NodeConfig, spool: Spool, journal: Journal, completer: Completer, *, clock=time.time):
        self.config = config
        self.spool = spool
        self.journal = journal
        self.completer = completer
        self.clock = clock
        self.resolved = resolve_hosts(config)
        self._associations: dict[int, _Association] = {}
        # Closed connections whose EVT_RELEASED may still come: pynetdicom fires EVT_CONN_CLOSE from its DUL
        # thread and EVT_RELEASED from the association's, in either order; kept (with the association, so an
        # id reused later cannot match) until the release or the bound drops them.
        self._closed: dict[int, tuple[object, _Association]] = {}
        self._lock = threading.Lock()
        self._server = None
        self.ae = None

    # --- life ---------------------------------------------------------------------------------------------
    def start(self) -> tuple[str, int]:
        from pynetdicom import AE, evt
        from pynetdicom.presentation import AllStoragePresentationContexts

        ae = AE(ae_title=self.config.ae_title)
        ae.require_called_aet = True
        ae.maximum_associations = 25  # as the Informatics Gateway; more are rejected (transient, local limit)
        ae.network_timeout = 60
        ae.acse_timeout = 30
        ae.dimse_timeout = 60
        ae.add_supported_context(VERIFICATION)
        for uid in MR_STORAGE:
            ae.add_supported_context(uid, list(MR_TRANSFER_SYNTAXES))
        for context in AllStoragePresentationContexts:
            if context.abstract_syntax not in MR_STORAGE:
                ae.add_supported_context(context.abstract_syntax)
        handlers = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_RELEASED, self._on_released),
            (evt.EVT_ABORTED, self._on_aborted),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_CONN_CLOSE, self._on_closed),
        ]
        self._server = ae.start_server(
            (self.config.bind, self.config.port), block=False, evt_handlers=handlers, ssl_context=self._ssl_context()
        )
        self.ae = ae
        self.completer.busy = self.busy_jobs
        host, port = self._server.server_address[:2]
        log.info(
            "DICOM SCP %s listening on %s:%d%s; allowed callers: %s",
            self.config.ae_title,
            host,
            port,
            " (TLS)" if self.config.tls else "",
            ", ".join(e.text() for e in self.config.allow_ae),
        )
        return host, port

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self.config.tls:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(certfile=str(self.config.tls_cert), keyfile=str(self.config.tls_key))
        if self.config.tls_ca is not None:  # callers must present a certificate this CA signed
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cafile=str(self.config.tls_ca))
        return context

    def busy_jobs(self) -> set[int]:
        """The jobs whose series an open association has sent instances of."""
        with self._lock:
            return set().union(*(state.jobs for state in self._associations.values()))

    def active(self) -> int:
        with self._lock:
            return len(self._associations)

    def stop(self, grace_s: float = 10.0) -> None:
        if self._server is None:
            return
        self._server.shutdown()  # no new associations; the open ones go on
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and self._server.active_associations:
            time.sleep(0.05)
        for assoc in list(self._server.active_associations):
            log.warning(
                "aborting the association with %s at shutdown (its unacknowledged stores are resent by the sender)",
                assoc.requestor.ae_title,
            )
            assoc.abort()
        self._server = None

    # --- events -------------------------------------------------------------------------------------------
    def _on_requested(self, event) -> None:
        assoc = event.assoc
        calling = assoc.requestor.primitive.calling_ae_title
        address = normalise_address(assoc.requestor.address)
        if self.config.allows(calling, address, self.resolved):
            with self._lock:
                self._associations[id(assoc)] = _Association(calling_ae=calling.strip(), address=address)
            return
        reason = f"calling AE title '{calling.strip()}' from {address} is not on the allow-list"
        log.warning("association refused: %s", reason)
        self._refused(calling, address, "association", "A-ASSOCIATE-RJ (calling AE title not recognised)", reason)
        assoc.acse.send_reject(0x01, 0x01, 0x03)  # rejected permanent; service user; calling AE not recognised
        assoc.kill()  # as pynetdicom after its own rejections: waits until the A-ASSOCIATE-RJ is sent

    def _on_echo(self, event) -> int:
        return SUCCESS

    def _on_released(self, event) -> None:
        state = self._forget(event.assoc)
        if state is None or not self.config.complete_on_release:
            return
        for job_id in sorted(state.jobs - self.busy_jobs()):
            self.completer.complete(job_id, why=f"association with {state.calling_ae} released")

    def _on_aborted(self, event) -> None:
        state = self._forget(event.assoc)
        if state is not None and state.jobs:
            log.warning(
                "association with %s aborted; its series wait for the timeout (%g s)",
                state.calling_ae,
                self.config.series_timeout_s,
            )

    def _on_rejected(self, event) -> None:
        """pynetdicom's own rejections: a wrong called AE title, or too many open associations."""
        state = self._forget(event.assoc)
        primitive = event.assoc.acceptor.primitive
        reason = (
            f"rejected by the SCP: {getattr(primitive, 'reason_str', 'no reason given')} (called AE title "
            f"'{event.assoc.requestor.primitive.called_ae_title.strip()}', this node is '{self.config.ae_title}')"
        )
        log.warning("association from %s refused: %s", state.calling_ae if state else "?", reason)
        self._refused(
            state.calling_ae if state else None,
            state.address if state else None,
            "association",
            "A-ASSOCIATE-RJ",
            reason,
        )

    def _on_closed(self, event) -> None:
        """The connection ended: its series are no longer being sent. Its release may still be handled after
        this (another thread), so the state waits for it; a connection that ended without release or abort
        (a network timeout) leaves its series to the timeout."""
        with self._lock:
            state = self._associations.pop(id(event.assoc), None)
            if state is not None:
                self._closed[id(event.assoc)] = (event.assoc, state)
                while len(self._closed) > CLOSED_KEPT:
                    self._closed.pop(next(iter(self._closed)))

    def _forget(self, assoc) -> _Association | None:
        with self._lock:
            state = self._associations.pop(id(assoc), None)
            closed = self._closed.pop(id(assoc), None)
            if state is None and closed is not None and closed[0] is assoc:
                state = closed[1]
            return state

    def _on_store(self, event) -> int:
        with self._lock:
            state = self._associations.get(id(event.assoc))
        if state is None:  # cannot happen: the association was accepted by _on_requested
            return OUT_OF_RESOURCES
        state.instances += 1
        try:
            return self._store(event, state)
        except Exception:  # noqa: BLE001 - a bug must not be answered success; the sender retries
            log.exception("C-STORE from %s failed unexpectedly", state.calling_ae)
            return OUT_OF_RESOURCES

    def _store(self, event, state: _Association) -> int:
        sop_class = str(event.context.abstract_syntax)
        if state.instances > self.config.max_instances_per_association:
            return self._refuse(
                state,
                OUT_OF_RESOURCES,
                f"more than {self.config.max_instances_per_association} "
                "instances in one association (max_instances_per_association)",
            )
        if sop_class not in MR_STORAGE:
            return self._refuse(
                state,
                SOP_CLASS_NOT_SUPPORTED,
                f"SOP class {sop_class} is not MR image storage; the node takes {', '.join(MR_STORAGE.values())}",
            )
        try:
            dataset = event.dataset
            uids = (
                check_uid(dataset.get("StudyInstanceUID"), "StudyInstanceUID"),
                check_uid(dataset.get("SeriesInstanceUID"), "SeriesInstanceUID"),
                check_uid(event.request.AffectedSOPInstanceUID, "AffectedSOPInstanceUID"),
            )
            in_dataset = str(dataset.get("SOPInstanceUID", "")).rstrip("\0 ")
            dataset_class = str(dataset.get("SOPClassUID", "")).rstrip("\0 ")
            modality = str(dataset.get("Modality", "") or "") or None
            patient_id = str(dataset.get("PatientID", "") or "") or None
        except InputError as error:
            return self._refuse(state, CANNOT_UNDERSTAND, str(error))
        except Exception as error:  # noqa: BLE001 - pydicom raises many types for a malformed data set
            return self._refuse(
                state,
                CANNOT_UNDERSTAND,
                f"the data set cannot be decoded: {type(error).__name__}: {' '.join(str(error).split())[:200]}",
            )
        study_uid, series_uid, sop_uid = uids
        if in_dataset != sop_uid:
            return self._refuse(
                state,
                CANNOT_UNDERSTAND,
                f"SOPInstanceUID {in_dataset!r} differs from the request's AffectedSOPInstanceUID {sop_uid}",
            )
        if dataset_class != sop_class:
            return self._refuse(
                state,
                DATASET_DOES_NOT_MATCH,
                f"SOPClassUID {dataset_class!r} differs from the presentation context's {sop_class}",
            )
        data = event.encoded_dataset(include_meta=True)
        try:
            self.spool.check_room(len(data))
        except ResourceError as error:
            return self._refuse(state, OUT_OF_RESOURCES, str(error))
        return self._write(state, data, study_uid, series_uid, sop_uid, modality, patient_id)

    def _write(self, state, data: bytes, study_uid, series_uid, sop_uid, modality, patient_id) -> int:
        try:
            temporary = self.spool.write_temporary(data)
        except OSError as error:
            return self._refuse(state, OUT_OF_RESOURCES, f"the instance cannot be written to the spool: {error}")
        try:
            with self.spool.series_lock(series_uid):
                open_job = self.journal.open_job(series_uid)
                existing = self.spool.instance_path(study_uid, series_uid, sop_uid)
                old = existing.stat().st_size if open_job is not None and existing.exists() else 0
                held = open_job.bytes - old if open_job is not None else 0
                if held + len(data) > self.config.max_series_bytes:
                    return self._refuse(
                        state,
                        OUT_OF_RESOURCES,
                        f"series {series_uid} would hold {held + len(data)} "
                        f"bytes, more than max_series_bytes ({self.config.max_series_bytes})",
                    )
                self.spool.place(temporary, study_uid, series_uid, sop_uid)
                job = self.journal.record_instance(
                    study_uid=study_uid,
                    series_uid=series_uid,
                    sop_uid=sop_uid,
                    size=len(data),
                    calling_ae=state.calling_ae,
                    modality=modality,
                    patient_id=patient_id,
                )
        except OSError as error:
            return self._refuse(state, OUT_OF_RESOURCES, f"the instance cannot be written to the spool: {error}")
        finally:
            temporary.unlink(missing_ok=True)
        state.jobs.add(job.id)
        return SUCCESS

    def _refuse(self, state: _Association, status: int, reason: str) -> int:
        log.warning("C-STORE from %s (%s) refused with 0x%04X: %s", state.calling_ae, state.address, status, reason)
        self._refused(state.calling_ae, state.address, "C-STORE", f"0x{status:04X}", reason)
        return status

    def _refused(self, calling_ae, address, what, status, reason) -> None:
        try:
            self.journal.record_refusal(
                calling_ae=calling_ae.strip() if calling_ae else None,
                address=address,
                what=what,
                status=status,
                reason=reason,
            )
        except Exception:  # noqa: BLE001 - the refusal itself stands; only its journal line is missing
            log.exception("could not journal a refusal")


def normalise_address(address: str) -> str:
    """``::ffff:10.0.0.5`` (an IPv4 peer on a dual-stack socket) as ``10.0.0.5``."""
    return address[7:] if address.startswith("::ffff:") and "." in address else address


def resolve_hosts(config: NodeConfig) -> dict[str, frozenset[str]]:
    """Each allow-list host name -> its addresses, resolved once at start (an IP address stands for itself)."""
    import ipaddress

    resolved = {}
    for entry in config.allow_ae:
        if entry.host is None or entry.host in resolved:
            continue
        try:
            resolved[entry.host] = frozenset({str(ipaddress.ip_address(entry.host))})
            continue
        except ValueError:
            pass
        try:
            infos = socket.getaddrinfo(entry.host, None, proto=socket.IPPROTO_TCP)
        except OSError as error:
            raise ResourceError(
                f"allow_ae entry {entry.text()}: host {entry.host} does not resolve ({error})"
            ) from None
        resolved[entry.host] = frozenset(normalise_address(info[4][0]) for info in infos)
    return resolved
