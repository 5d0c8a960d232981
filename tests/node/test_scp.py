"""pantherseg.node.scp in process: allow-list, MR only, limits answered with statuses, completion; pynetdicom and
dcmtk (storescu, echoscu) as the callers."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import time
from pathlib import Path

import pydicom
import pytest

pytest.importorskip("pynetdicom")

from pantherseg.node.completion import Completer  # noqa: E402
from pantherseg.node.config import parse_node_config  # noqa: E402
from pantherseg.node.journal import Journal  # noqa: E402
from pantherseg.node.scp import StoreSCP  # noqa: E402
from pantherseg.node.spool import Spool  # noqa: E402

from node_harness import (  # noqa: E402
    CT_IMAGE_STORAGE,
    DCMTK,
    MR_IMAGE_STORAGE,
    echoscu,
    free_port,
    jobs,
    storescu,
    tiny_series,
    wait_for,
)

needs_dcmtk = pytest.mark.skipif(not DCMTK, reason="dcmtk's storescu/echoscu are not installed (apt-get install dcmtk)")


class Node:
    """An SCP with its spool, journal and completion timer, on a free loopback port."""

    def __init__(self, folder: Path, **settings):
        raw = {
            "spool": str(folder / "spool"),
            "allow_ae": ["SCANNER", "PACS@127.0.0.1", "FARAWAY@10.99.99.99"],
            "send_to": ["ORTHANC@127.0.0.1:4242"],
            "bind": "127.0.0.1",
            "port": free_port(),
            "series_timeout_s": 30,
            **settings,
        }
        self.config = parse_node_config(raw)
        self.spool = Spool(
            self.config.spool,
            max_disk_use_percent=self.config.max_disk_use_percent,
            min_free_bytes=self.config.min_free_bytes,
        ).create()
        self.journal = Journal(self.spool.journal_path)
        self.completer = Completer(self.spool, self.journal, series_timeout_s=self.config.series_timeout_s)
        self.scp = StoreSCP(self.config, self.spool, self.journal, self.completer)
        self.port = self.scp.start()[1]

    def stop(self):
        self.completer.stop()
        self.scp.stop(grace_s=2)

    def jobs(self):
        return jobs(self.spool.root)


@pytest.fixture
def node(tmp_path):
    made = []

    def make(**settings):
        made.append(Node(tmp_path, **settings))
        return made[-1]

    yield make
    for item in made:
        item.stop()


def _associate(
    port, calling="SCANNER", called="PANTHERSEG", contexts=(MR_IMAGE_STORAGE, CT_IMAGE_STORAGE), tls_args=None
):
    from pynetdicom import AE

    ae = AE(ae_title=calling)
    ae.add_requested_context("1.2.840.10008.1.1")
    for uid in contexts:
        ae.add_requested_context(uid)
    return ae.associate("127.0.0.1", port, ae_title=called, tls_args=tls_args)


def _store_all(assoc, paths):
    return [int(assoc.send_c_store(pydicom.dcmread(path)).Status) for path in paths]


def test_mr_instances_are_on_disk_and_journaled_before_success_and_release_queues_the_series(node, tmp_path):
    node = node()
    paths = tiny_series(tmp_path / "mr", slices=5)
    assoc = _associate(node.port)
    assert assoc.is_established
    assert int(assoc.send_c_echo().Status) == 0
    statuses = _store_all(assoc, paths)
    assert statuses == [0] * 5
    (job,) = node.jobs()  # every success was journaled before it was answered
    assert (job["state"], job["instances"], job["calling_ae"], job["modality"]) == ("received", 5, "SCANNER", "MR")
    first = pydicom.dcmread(paths[0])
    stored = node.spool.instance_path(first.StudyInstanceUID, first.SeriesInstanceUID, first.SOPInstanceUID)
    assert pydicom.dcmread(stored).PixelData == first.PixelData  # the bytes as sent, with a file meta header
    assert len(list(stored.parent.iterdir())) == 5 and list(node.spool.tmp.iterdir()) == []
    assoc.release()
    wait_for(lambda: node.jobs()[0]["state"] == "queued", 10, "the release to queue the series")
    assert sorted(p.name for p in node.spool.job_input(job["id"]).iterdir()) == sorted(
        f"{pydicom.dcmread(p).SOPInstanceUID}.dcm" for p in paths
    )
    assert not stored.parent.exists()


def test_other_sop_classes_are_refused_with_a_status_not_dropped(node, tmp_path):
    node = node()
    ct = tiny_series(tmp_path / "ct", slices=2, modality="CT", sop_class=CT_IMAGE_STORAGE)
    assoc = _associate(node.port)
    assert _store_all(assoc, ct) == [0x0122, 0x0122]
    assoc.release()
    assert node.jobs() == [] and not any(node.spool.incoming.iterdir())
    refusal = node.journal.refusals()[0]
    assert (refusal["what"], refusal["status"], refusal["calling_ae"]) == ("C-STORE", "0x0122", "SCANNER")
    assert "is not MR image storage" in refusal["reason"]


@pytest.mark.parametrize(
    "settings, slices, expected, reason",
    [
        ({"max_instances_per_association": 3}, 5, [0, 0, 0, 0xA700, 0xA700], "max_instances_per_association"),
        ({"max_series_bytes": 2500}, 3, [0, 0xA700, 0xA700], "max_series_bytes"),
        ({"max_disk_use_percent": 1}, 2, [0xA700, 0xA700], "max_disk_use_percent"),
    ],
)
def test_limits_are_answered_out_of_resources_and_logged(node, tmp_path, settings, slices, expected, reason, caplog):
    node = node(**settings)
    assoc = _associate(node.port)
    assert _store_all(assoc, tiny_series(tmp_path / "mr", slices=slices)) == expected
    assoc.release()
    stored = sum(status == 0 for status in expected)
    assert sum(job["instances"] for job in node.jobs()) == stored
    assert reason in node.journal.refusals()[0]["reason"]
    assert any("refused with 0xA700" in record.getMessage() for record in caplog.records)


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI:UserWarning")  # pydicom, writing the bad UIDs on purpose
def test_bad_uids_are_refused_as_not_understood_and_never_name_a_path(node, tmp_path):
    node = node()

    def bad(k, ds):
        ds.StudyInstanceUID = ["../../../../tmp/evil", "1.2.03"][k]

    paths = tiny_series(tmp_path / "mr", slices=2, tweak=bad)
    assoc = _associate(node.port)
    assert _store_all(assoc, paths) == [0xC000, 0xC000]
    assoc.release()
    assert node.jobs() == [] and not any(node.spool.incoming.iterdir())
    assert "StudyInstanceUID must be a DICOM UID" in node.journal.refusals()[0]["reason"]


def test_a_write_that_fails_is_not_acknowledged(node, tmp_path, monkeypatch):
    node = node()

    def full(data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(node.spool, "write_temporary", full)
    assoc = _associate(node.port)
    assert _store_all(assoc, tiny_series(tmp_path / "mr", slices=1)) == [0xA700]
    assoc.release()
    assert node.jobs() == []


def test_callers_off_the_allow_list_are_rejected_at_association(node):
    from pynetdicom import AE

    node = node()
    for calling, called in [("INTRUDER", "PANTHERSEG"), ("FARAWAY", "PANTHERSEG"), ("SCANNER", "WRONGNODE")]:
        assoc = _associate(node.port, calling=calling, called=called)
        assert assoc.is_rejected, (calling, called)
        primitive = assoc.acceptor.primitive
        expected = "Calling AE title not recognised" if called == "PANTHERSEG" else "Called AE title not recognised"
        assert (primitive.result, primitive.result_source, primitive.reason_str) == (0x01, 0x01, expected)
    assert _associate(node.port, calling="PACS").is_established  # PACS@127.0.0.1 is allowed from here
    refusals = node.journal.refusals()
    assert [r["calling_ae"] for r in refusals if r["what"] == "association"][-2:] == ["FARAWAY", "INTRUDER"]
    assert "FARAWAY' from 127.0.0.1 is not on the allow-list" in refusals[-2]["reason"]
    assert AE  # pynetdicom present


@needs_dcmtk
def test_dcmtk_echoscu_and_storescu(node, tmp_path):
    node = node()
    assert echoscu(node.port).returncode == 0
    refused = echoscu(node.port, calling="INTRUDER")
    assert refused.returncode != 0 and "Calling AE Title Not Recognized" in refused.stderr
    paths = tiny_series(tmp_path / "mr", slices=6)
    ct = tiny_series(tmp_path / "ct", slices=1, modality="CT", sop_class=CT_IMAGE_STORAGE)
    sent = storescu(node.port, [tmp_path / "mr", *ct], extra=["-v"])
    assert sent.returncode == 1 and "Refused: SOPClassNotSupported" in sent.stdout + sent.stderr, sent.stderr
    wait_for(lambda: node.jobs() and node.jobs()[0]["state"] == "queued", 10, "storescu's release to queue it")
    assert node.jobs()[0]["instances"] == len(paths)


def test_a_series_without_release_is_complete_after_the_timeout(node, tmp_path):
    node = node(series_timeout_s=0.6, complete_on_release=False)
    node.completer.run_in_thread()
    assoc = _associate(node.port)
    started = time.monotonic()
    assert _store_all(assoc, tiny_series(tmp_path / "mr", slices=2)) == [0, 0]
    assoc.release()
    time.sleep(0.3)
    assert node.jobs()[0]["state"] == "received"  # released, but the release does not complete it here
    wait_for(lambda: node.jobs()[0]["state"] == "queued", 10, "the timeout to queue the series")
    assert time.monotonic() - started >= 0.6


def test_release_leaves_a_series_that_another_open_association_still_sends(node, tmp_path):
    node = node()
    paths = tiny_series(tmp_path / "mr", slices=4)
    first, second = _associate(node.port), _associate(node.port)
    assert _store_all(first, paths[:2]) == [0, 0] and _store_all(second, paths[2:3]) == [0]
    first.release()
    time.sleep(0.5)
    assert node.jobs()[0]["state"] == "received"
    assert _store_all(second, paths[3:]) == [0]
    second.release()
    wait_for(lambda: node.jobs()[0]["state"] == "queued", 10, "the last release to queue the series")
    assert node.jobs()[0]["instances"] == 4


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_tls_associations(node, tmp_path):
    cert, key = tmp_path / "node.pem", tmp_path / "node.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    node = node(tls_cert=str(cert), tls_key=str(key))
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
    assoc = _associate(node.port, tls_args=(client, "127.0.0.1"))
    assert assoc.is_established and int(assoc.send_c_echo().Status) == 0
    assoc.release()
    plain = _associate(node.port)  # no TLS: no association
    assert not plain.is_established


def test_the_timeout_waits_while_an_open_association_still_sends_the_series(node, tmp_path):
    node = node(series_timeout_s=0.4, complete_on_release=False)
    node.completer.run_in_thread()
    paths = tiny_series(tmp_path / "mr", slices=3)
    assoc = _associate(node.port)  # a scanner sending slices as it acquires them, slowly
    assert _store_all(assoc, paths[:2]) == [0, 0]
    time.sleep(1.2)
    assert node.jobs()[0]["state"] == "received"
    assert _store_all(assoc, paths[2:]) == [0]
    assoc.release()
    wait_for(lambda: node.jobs()[0]["state"] == "queued", 10, "the timeout once the association ended")
    assert node.jobs()[0]["instances"] == 3


def test_a_release_handled_after_the_connection_closed_still_queues_the_series(node, tmp_path, monkeypatch):
    """pynetdicom fires EVT_CONN_CLOSE (its DUL thread) and EVT_RELEASED (the association's thread) in either
    order; a close handled first must not make the release forget the series it sent (a 1-in-many CI flake)."""
    from types import SimpleNamespace

    from pantherseg.node.scp import _Association

    node = node()
    queued = []
    monkeypatch.setattr(node.completer, "complete", lambda job_id, why: queued.append(job_id))
    assoc = SimpleNamespace()
    node.scp._associations[id(assoc)] = _Association(calling_ae="SCANNER", address="127.0.0.1", jobs={7})
    event = SimpleNamespace(assoc=assoc)
    node.scp._on_closed(event)
    assert node.scp.busy_jobs() == set()  # closed: no longer being sent
    node.scp._on_released(event)
    assert queued == [7]
    node.scp._on_released(event)  # a second event for it finds nothing left
    assert queued == [7] and node.scp._closed == {}
