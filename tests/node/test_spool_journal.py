"""pantherseg.node.spool and journal: durable writes, UIDs as paths, the watermark, states and recovery."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from pantherseg.errors import InputError, ResourceError
from pantherseg.node.journal import STATES, Journal
from pantherseg.node.spool import Spool, check_uid

STUDY, SERIES = "1.2.826.0.1.3680043.2.1", "1.2.826.0.1.3680043.2.1.7"


@pytest.mark.parametrize("uid", ["1.2.840.10008.5.1.4.1.1.4", "0.0", "1.2.826.0.1.3680043.8.498." + "9" * 38, "1.2\0"])
def test_valid_uids_pass(uid):
    assert check_uid(uid, "SeriesInstanceUID") == uid.rstrip("\0")


@pytest.mark.parametrize(
    "uid",
    [
        "",
        "1",
        "../../etc",
        "1.2/3",
        "1.2.03",
        "1..2",
        ".1.2",
        "1.2.",
        "1.2 3",
        "1.2.a",
        "1." + "2" * 63,
        None,
        12,
        "1.2\0.3",
    ],
)
def test_uids_that_could_not_or_must_not_name_a_path_are_refused(uid):
    with pytest.raises(InputError, match="SeriesInstanceUID must be a DICOM UID"):
        check_uid(uid, "SeriesInstanceUID")


def test_an_instance_is_written_whole_renamed_into_place_and_replaced_on_resend(tmp_path):
    spool = Spool(tmp_path / "spool").create()
    assert stat.S_IMODE(os.stat(spool.root).st_mode) == 0o700
    (spool.tmp / "crashed.part").write_bytes(b"half")  # a crash mid-write leaves this; start clears it
    spool.create()
    assert list(spool.tmp.iterdir()) == []
    temporary = spool.write_temporary(b"A" * 1000)
    assert temporary.parent == spool.tmp and temporary.read_bytes() == b"A" * 1000
    path, replaced = spool.place(temporary, STUDY, SERIES, "1.2.3.4")
    assert path == spool.incoming / STUDY / SERIES / "1.2.3.4.dcm" and replaced == 0 and not temporary.exists()
    again, replaced = spool.place(spool.write_temporary(b"B" * 10), STUDY, SERIES, "1.2.3.4")
    assert again == path and replaced == 1000 and path.read_bytes() == b"B" * 10
    assert [item[2] for item in spool.incoming_instances()] == ["1.2.3.4"]
    with pytest.raises(InputError):
        spool.place(spool.write_temporary(b"x"), STUDY, "..", "1.2.3.5")


def test_taking_a_series_moves_its_folder_in_one_rename(tmp_path):
    spool = Spool(tmp_path / "spool").create()
    spool.place(spool.write_temporary(b"x"), STUDY, SERIES, "1.2.3.4")
    folder = spool.take_series(STUDY, SERIES, 7)
    assert folder == spool.job_input(7) and (folder / "1.2.3.4.dcm").read_bytes() == b"x"
    assert not (spool.incoming / STUDY).exists()  # the study folder went with its only series
    assert spool.take_series(STUDY, SERIES, 7) == folder  # taken before a crash: found again
    with pytest.raises(InputError, match="no received instances"):
        spool.take_series(STUDY, SERIES, 8)


def test_the_watermark_refuses_by_percent_and_by_free_bytes(tmp_path):
    disk = Spool(tmp_path).disk()
    assert 0 < disk.used_percent < 100
    Spool(tmp_path, max_disk_use_percent=100, min_free_bytes=0).check_room(1000)
    with pytest.raises(ResourceError, match=r"spool disk .*% used after this instance, above the watermark of 1%"):
        Spool(tmp_path, max_disk_use_percent=1).check_room(1000)
    with pytest.raises(ResourceError, match="less than the .* bytes kept free"):
        Spool(tmp_path, min_free_bytes=disk.free + (1 << 30)).check_room(1000)


def _instance(journal, sop, size=100, series=SERIES):
    return journal.record_instance(
        study_uid=STUDY, series_uid=series, sop_uid=sop, size=size, calling_ae="SCANNER", modality="MR", patient_id="P1"
    )


def test_a_job_goes_through_its_states_with_timings(tmp_path):
    clock = iter(range(100, 200)).__next__
    journal = Journal(tmp_path / "journal.sqlite", clock=lambda: float(clock()))
    first = _instance(journal, "1.2.3.1")
    _instance(journal, "1.2.3.2", 50)
    job = _instance(journal, "1.2.3.1", 70)  # resent: counted once, with its new size
    assert job.id == first.id and (job.state, job.instances, job.bytes) == ("received", 2, 120)
    assert journal.due_for_completion(job.last_instance_at) == [] and journal.due_for_completion(1e9) == [job]
    journal.queue(job.id)
    assert journal.claim_next().state == "segmenting" and journal.claim_next() is None
    journal.mark_sending(job.id, {"dicom-seg": "/x.seg.dcm"}, {"network": 1.5})
    journal.mark_sent(job.id, [{"ok": True}])
    done = journal.job(job.id)
    assert done.state == "sent" and done.outputs == {"dicom-seg": "/x.seg.dcm"} and done.deliveries == [{"ok": True}]
    assert done.received_at < done.queued_at < done.started_at < done.segmented_at < done.finished_at
    later = _instance(journal, "1.2.3.9")  # the same series again, after its job was taken: a new job
    assert later.id != job.id and later.instances == 1
    assert journal.counts() == {**dict.fromkeys(STATES, 0), "sent": 1, "received": 1} and journal.studies() == 1


def test_the_queue_is_taken_in_order_and_a_failure_keeps_its_one_line_reason(tmp_path):
    journal = Journal(tmp_path / "journal.sqlite")
    jobs = [_instance(journal, f"1.2.{n}.1", series=f"1.2.9.{n}") for n in (1, 2, 3)]
    for job in (jobs[1], jobs[0], jobs[2]):
        journal.queue(job.id)
    taken = [journal.claim_next().id for _ in range(3)]
    assert taken == [jobs[1].id, jobs[0].id, jobs[2].id]
    journal.mark_failed(taken[0], "series X is not MR:\n  Modality 'CT'")
    assert journal.job(taken[0]).reason == "series X is not MR: Modality 'CT'"


def test_recovery_requeues_held_jobs_and_restarts_receiving_timers(tmp_path):
    now = [1000.0]
    journal = Journal(tmp_path / "journal.sqlite", clock=lambda: now[0])
    receiving = _instance(journal, "1.2.1.1", series="1.2.9.1")
    held = _instance(journal, "1.2.2.1", series="1.2.9.2")
    sending = _instance(journal, "1.2.3.1", series="1.2.9.3")
    for job in (held, sending):
        journal.queue(job.id)
        journal.claim_next()
    journal.mark_sending(sending.id, {"dicom-seg": "/x"})
    journal.close()

    now[0] = 5000.0  # the node restarts much later
    again = Journal(tmp_path / "journal.sqlite", clock=lambda: now[0])
    assert again.recover() == {"requeued": 2, "receiving": 1, "queued": 2}
    assert again.job(held.id).state == again.job(sending.id).state == "queued"
    assert again.job(sending.id).outputs == {"dicom-seg": "/x"}  # its results are only delivered again
    assert again.job(receiving.id).last_instance_at == 5000.0  # its timeout counts from the restart


def test_one_connection_per_thread(tmp_path):
    journal = Journal(tmp_path / "journal.sqlite")
    errors = []

    def store(n):
        try:
            for k in range(20):
                _instance(journal, f"1.2.{n}.{k + 1}", series=f"1.2.8.{n}")
        except Exception as error:  # noqa: BLE001 - collected for the assertion
            errors.append(error)

    threads = [threading.Thread(target=store, args=(n,)) for n in range(1, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and sorted(job.instances for job in journal.jobs()) == [20, 20, 20, 20]
    assert Path(str(journal.path) + "-wal").exists()  # WAL mode


def test_node_status_reads_the_journal_and_refuses_a_folder_without_one(tmp_path):
    from pantherseg.node.status import format_status, node_status

    with pytest.raises(InputError, match="No node journal at .*journal.sqlite: expected the --spool folder"):
        node_status(tmp_path)
    journal = Journal(tmp_path / "journal.sqlite")
    job = _instance(journal, "1.2.3.1")
    journal.queue(job.id)
    journal.claim_next()
    journal.mark_failed(job.id, "series 1.2 is not MR")
    journal.record_refusal(
        calling_ae="INTRUDER",
        address="10.0.0.9",
        what="association",
        status="A-ASSOCIATE-RJ",
        reason="not on the allow-list",
    )
    status = node_status(tmp_path)
    assert status["jobs"]["failed"] == 1 and status["node"]["state"] == "unknown (no node.json)"
    table = format_status(status)
    assert "failed 1" in table and "series 1.2 is not MR" in table and "INTRUDER@10.0.0.9" in table
