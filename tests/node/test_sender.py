"""pantherseg.node.sender against a real PACS: Debian's Orthanc started per test on free loopback ports.

The results sent are the project's own: a DICOM-SEG and an RTSTRUCT written by ``write_dicom_output`` from a
phantom MR series (tests/dicom_factory.py), and a TID 1500 measurement report built with highdicom (a stand-in
for the node's SR writer, which is another module's job). Orthanc's REST API reads back what arrived.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pynetdicom")
pytest.importorskip("highdicom")

from pantherseg.dicom.seg import Algorithm  # noqa: E402
from pantherseg.dicom.series import read_series  # noqa: E402
from pantherseg.dicom.writing import write_dicom_output  # noqa: E402
from pantherseg.errors import ConfigError  # noqa: E402
from pantherseg.node.destinations import parse_destination  # noqa: E402
from pantherseg.node.sender import REASON_FILE, RetryPolicy, Sender  # noqa: E402

from dicom_factory import orient, phantom_case, write_series  # noqa: E402
from orthanc import DICOMWEB_PLUGIN, ORTHANC, OrthancServer, orthanc, orthanc_server  # noqa: E402,F401

pytestmark = pytest.mark.skipif(
    not ORTHANC.exists(), reason="Debian's orthanc is not installed (apt-get install orthanc)"
)
needs_dicomweb = pytest.mark.skipif(
    not DICOMWEB_PLUGIN.exists(), reason="Orthanc's DICOMweb plugin is not installed (apt-get install orthanc-dicomweb)"
)

SEG = "1.2.840.10008.5.1.4.1.1.66.4"
RTSTRUCT = "1.2.840.10008.5.1.4.1.1.481.3"
SR_3D = "1.2.840.10008.5.1.4.1.1.88.34"
# Orthanc 1.10 stores a filtered-out instance and answers success; a filter that fails answers 0xA700.
REFUSE_RTSTRUCT = """function ReceivedInstanceFilter(dicom, origin, info)
  if dicom.Modality == 'RTSTRUCT' then error('RTSTRUCT refused by the test filter') end
  return true
end
"""


def _sr(series, seg_path: Path, path: Path) -> Path:
    """A TID 1500 measurement report (tumour volume) referencing the SEG and the series, by highdicom."""
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    seg = pydicom.dcmread(seg_path)
    source = series.datasets[0]
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(uid=hd.UID()),
    )
    context = hd.sr.ObservationContext(observer_person_context=None, observer_device_context=observer)
    region = hd.sr.ReferencedSegment(
        sop_class_uid=seg.SOPClassUID,
        sop_instance_uid=seg.SOPInstanceUID,
        segment_number=1,
        source_series=hd.sr.SourceSeriesForSegmentation(series.uid),
    )
    volume = hd.sr.Measurement(name=codes.SCT.Volume, value=4.0, unit=hd.sr.CodedConcept("ml", "UCUM", "milliliter"))
    group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="tumour"),
        referenced_segment=region,
        measurements=[volume],
    )
    report = hd.sr.MeasurementReport(
        observation_context=context,
        procedure_reported=codes.cid100.MRIUnspecifiedBodyRegion,
        imaging_measurements=[group],
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[source, seg],
        content=report,
        series_instance_uid=hd.UID(),
        series_number=90,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="pantherseg-tests",
    )
    sr.save_as(path)
    return path


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """kind -> a result file of this phantom series: the project's SEG and RTSTRUCT, and an SR."""
    folder = tmp_path_factory.mktemp("results")
    image = orient(phantom_case()[0], "axial")[:, :, :8]
    write_series(image, folder / "series")
    series = read_series(folder / "series")
    mask = np.zeros(series.volume.shape_zyx, np.uint8)
    mask[2:5, 20:30, 20:34] = 1
    algorithm = Algorithm(task="t2", members=("allrounder-f0",))
    seg, _ = write_dicom_output("dicom-seg", mask, series.datasets, folder / "case.seg.dcm", algorithm=algorithm)
    rtstruct, _ = write_dicom_output(
        "rtstruct", mask, series.datasets, folder / "case.rtstruct.dcm", algorithm=algorithm
    )
    return {"seg": Path(seg), "rtstruct": Path(rtstruct), "sr": _sr(series, Path(seg), folder / "case.sr.dcm")}


def _uid(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _stored(server: OrthancServer) -> dict[str, object]:
    """SOP Instance UID -> dataset, of everything Orthanc holds."""
    return {str(ds.SOPInstanceUID): ds for ds in server.datasets()}


def _same_content(sent: Path, received) -> bool:
    """The dataset Orthanc returns equals the file sent, element for element (file meta aside)."""
    import pydicom

    original = pydicom.dcmread(sent)
    return original == received


class Sleeps:
    """A fake sleep that records the waits and may run something on the first one (start Orthanc late)."""

    def __init__(self, on_first=None):
        self.waits: list[float] = []
        self.on_first = on_first

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if len(self.waits) == 1 and self.on_first is not None:
            self.on_first()


def _destination(server: OrthancServer, outputs: str | None = None, ae: str = "ORTHANC"):
    return parse_destination(f"{ae}@127.0.0.1:{server.dicom_port}" + (f"?outputs={outputs}" if outputs else ""))


# --- C-STORE ---------------------------------------------------------------------------------------------


def test_c_store_delivers_seg_rtstruct_and_sr_unchanged(orthanc, results, tmp_path):
    sender = Sender([_destination(orthanc)], tmp_path / "dead", RetryPolicy(attempts=1))
    files = list(results.values())
    [delivery] = sender.deliver("job-1", files)
    assert delivery.ok, delivery.error
    assert delivery.attempts == 1 and delivery.error is None and delivery.dead_letter is None
    assert sorted(delivery.delivered) == sorted(_uid(path) for path in files)
    stored = _stored(orthanc)
    assert set(stored) == set(delivery.delivered)
    for path in files:
        assert _same_content(path, stored[_uid(path)])
    assert len(orthanc.find_by_sop_class(SEG)) == len(orthanc.find_by_sop_class(RTSTRUCT)) == 1
    assert len(orthanc.find_by_sop_class(SR_3D)) == 1
    assert {orthanc.remote_aet(instance) for instance in orthanc.instances()} == {"PANTHERSEG"}
    assert not (tmp_path / "dead").exists()
    assert json.loads(json.dumps(delivery.to_json()))["ok"] is True


def test_outputs_route_each_kind_to_its_destination(orthanc, results, tmp_path):
    planning = OrthancServer(tmp_path / "planning")
    try:
        planning.start()
        sender = Sender(
            [_destination(orthanc, "seg,sr"), _destination(planning, "rtstruct")],
            tmp_path / "dead",
            RetryPolicy(attempts=1),
        )
        kinds = {path: kind for kind, path in results.items()}
        pacs, tps = sender.deliver("job-2", list(results.values()), kinds)
        assert pacs.ok and tps.ok, (pacs.error, tps.error)
        assert set(pacs.files) == {results["seg"], results["sr"]} and tps.files == (results["rtstruct"],)
        assert set(_stored(orthanc)) == {_uid(results["seg"]), _uid(results["sr"])}
        assert set(_stored(planning)) == {_uid(results["rtstruct"])}
    finally:
        planning.kill()


def test_kinds_come_from_the_sop_class_when_not_given(orthanc, results, tmp_path):
    sender = Sender([_destination(orthanc, "rtstruct")], tmp_path / "dead", RetryPolicy(attempts=1))
    [delivery] = sender.deliver("job-3", list(results.values()))
    assert delivery.ok and delivery.files == (results["rtstruct"],)
    assert orthanc.find_by_sop_class(RTSTRUCT) and not orthanc.find_by_sop_class(SEG)


def test_a_destination_that_takes_none_of_the_files_is_not_contacted(results, tmp_path):
    # Nothing listens on this port: a contact attempt would fail.
    dest = parse_destination("NOBODY@127.0.0.1:9?outputs=sr")
    [delivery] = Sender([dest], tmp_path / "dead").deliver("job-4", [results["seg"]], {results["seg"]: "seg"})
    assert delivery.ok and delivery.attempts == 0 and delivery.files == ()


@pytest.mark.parametrize(
    "calling, called, reason",
    [
        ("INTRUDER", "ORTHANC", "Calling AE title not recognised"),
        ("PANTHERSEG", "NOTORTHANC", "Called AE title not recognised"),
    ],
)
def test_a_refused_association_is_retried_with_backoff_then_dead_lettered(
    orthanc, results, tmp_path, calling, called, reason
):
    sleeps = Sleeps()
    policy = RetryPolicy(attempts=3, first_delay_s=1.5, factor=2.0, max_delay_s=60)
    sender = Sender([_destination(orthanc, ae=called)], tmp_path / "dead", policy, calling_ae=calling, sleep=sleeps)
    files = [results["seg"], results["rtstruct"]]
    [delivery] = sender.deliver("job-5", files)
    assert not delivery.ok and delivery.attempts == 3 and delivery.delivered == ()
    assert sleeps.waits == [1.5, 3.0]
    assert reason in delivery.error and "rejected" in delivery.error and len(delivery.errors) == 3
    assert orthanc.instances() == []
    folder = delivery.dead_letter
    assert folder == tmp_path / "dead" / "job-5" / f"{called}@127.0.0.1_{orthanc.dicom_port}"
    for path in files:
        assert (folder / path.name).read_bytes() == path.read_bytes()
    note = json.loads((folder / REASON_FILE).read_text())
    assert note["attempts"] == 3 and reason in note["last_error"] and note["destination"]["ae_title"] == called
    assert note["destination"]["port"] == orthanc.dicom_port and sorted(note["files"]) == sorted(p.name for p in files)
    assert note["delivered"] == [] and note["job_id"] == "job-5"
    assert not [p for p in (tmp_path / "dead" / "job-5").iterdir() if p.name.startswith(".")]


def test_orthanc_down_at_first_then_up_delivers_after_a_retry(orthanc_server, results, tmp_path):
    sleeps = Sleeps(on_first=orthanc_server.start)
    sender = Sender(
        [_destination(orthanc_server)],
        tmp_path / "dead",
        RetryPolicy(attempts=4, first_delay_s=2, timeout_s=5),
        sleep=sleeps,
    )
    [delivery] = sender.deliver("job-6", list(results.values()))
    assert delivery.ok, delivery.errors
    assert delivery.attempts == 2 and sleeps.waits == [2.0]
    assert "no association" in delivery.errors[0] and "connection refused" in delivery.errors[0]
    assert set(_stored(orthanc_server)) == {_uid(path) for path in results.values()}
    assert not (tmp_path / "dead").exists()


def test_a_failure_status_fails_only_that_instance_and_the_retry_sends_only_what_is_missing(tmp_path, results):
    server = OrthancServer(tmp_path / "strict", lua=REFUSE_RTSTRUCT)
    try:
        server.start()
        sleeps = Sleeps()
        sender = Sender(
            [_destination(server)], tmp_path / "dead", RetryPolicy(attempts=2, first_delay_s=0), sleep=sleeps
        )
        [delivery] = sender.deliver("job-7", [results["seg"], results["rtstruct"]])
        assert not delivery.ok and delivery.attempts == 2
        assert delivery.delivered == (_uid(results["seg"]),)
        assert (
            "case.rtstruct.dcm: C-STORE status 0xA700 (Failure" in delivery.error
            and "1 of 1 not stored" in delivery.error
        )
        assert "1 of 2 not stored" in delivery.errors[0]  # the retry sent the RTSTRUCT alone
        assert set(_stored(server)) == {_uid(results["seg"])}
        assert sorted(p.name for p in delivery.dead_letter.iterdir()) == sorted([REASON_FILE, results["rtstruct"].name])
        assert json.loads((delivery.dead_letter / REASON_FILE).read_text())["delivered"] == [_uid(results["seg"])]
    finally:
        server.kill()


def test_a_second_dead_letter_for_one_job_keeps_the_first(results, tmp_path):
    sender = Sender([parse_destination("NOBODY@127.0.0.1:9")], tmp_path / "dead", RetryPolicy(attempts=1, timeout_s=2))
    first = sender.deliver("job-8", [results["seg"]])[0].dead_letter
    second = sender.deliver("job-8", [results["seg"]])[0].dead_letter
    assert first != second and second.name == first.name + "-2"
    assert (first / REASON_FILE).exists() and (second / REASON_FILE).exists()


def test_an_unreadable_result_file_fails_at_once_with_its_reason(results, tmp_path):
    broken = tmp_path / "broken.seg.dcm"
    broken.write_bytes(b"not a DICOM file")
    sleeps = Sleeps()
    sender = Sender([parse_destination("NOBODY@127.0.0.1:9")], tmp_path / "dead", sleep=sleeps)
    [delivery] = sender.deliver("job-9", [results["sr"], broken])
    assert not delivery.ok and delivery.attempts == 0 and sleeps.waits == []
    assert f"result file {broken} cannot be read" in delivery.error
    assert sorted(p.name for p in delivery.dead_letter.iterdir()) == sorted(
        [REASON_FILE, "broken.seg.dcm", results["sr"].name]
    )


def test_a_stop_event_ends_the_backoff_and_leaves_the_job_to_requeue(results, tmp_path):
    stop = threading.Event()
    sender = Sender(
        [parse_destination("NOBODY@127.0.0.1:9")],
        tmp_path / "dead",
        RetryPolicy(attempts=5, first_delay_s=3600, timeout_s=2),
        sleep=lambda s: stop.set(),
        stop=stop,
    )
    [delivery] = sender.deliver("job-10", [results["seg"]])
    assert not delivery.ok and delivery.interrupted and delivery.attempts == 1
    assert delivery.dead_letter is None and not (tmp_path / "dead").exists()


def test_the_real_wait_returns_when_stop_is_set(results, tmp_path):
    stop = threading.Event()
    timer = threading.Timer(0.3, stop.set)
    sender = Sender(
        [parse_destination("NOBODY@127.0.0.1:9")],
        tmp_path / "dead",
        RetryPolicy(attempts=2, first_delay_s=600, timeout_s=2),
        stop=stop,
    )
    timer.start()
    try:
        [delivery] = sender.deliver("job-11", [results["seg"]])
    finally:
        timer.cancel()
    assert delivery.interrupted and delivery.seconds < 30


# --- STOW-RS ---------------------------------------------------------------------------------------------


@needs_dicomweb
def test_stow_rs_delivers_to_orthanc_dicomweb(orthanc, results, tmp_path):
    dest = parse_destination(f"{orthanc.dicomweb_url}?outputs=seg,sr")
    [delivery] = Sender([dest], tmp_path / "dead", RetryPolicy(attempts=1)).deliver("job-12", list(results.values()))
    assert delivery.ok, delivery.error
    assert sorted(delivery.delivered) == sorted([_uid(results["seg"]), _uid(results["sr"])])
    stored = _stored(orthanc)
    assert set(stored) == set(delivery.delivered)
    assert _same_content(results["seg"], stored[_uid(results["seg"])])


@needs_dicomweb
def test_stow_rs_failed_instances_in_the_response_are_not_delivered(tmp_path, results):
    server = OrthancServer(tmp_path / "strict", lua=REFUSE_RTSTRUCT)
    try:
        server.start()
        sender = Sender(
            [parse_destination(server.dicomweb_url)],
            tmp_path / "dead",
            RetryPolicy(attempts=2, first_delay_s=0),
            sleep=Sleeps(),
        )
        [delivery] = sender.deliver("job-13", [results["seg"], results["rtstruct"]])
        assert not delivery.ok and delivery.attempts == 2
        # Only what the response lists as stored counts: Orthanc's plugin (1.7) lists nothing when one fails.
        assert _uid(results["rtstruct"]) not in delivery.delivered and set(delivery.delivered) <= {_uid(results["seg"])}
        assert server.dicomweb_url in delivery.error and _uid(results["rtstruct"]) in delivery.error
        assert _uid(results["rtstruct"]) not in _stored(server)
        assert (delivery.dead_letter / results["rtstruct"].name).exists()
    finally:
        server.kill()


@needs_dicomweb
def test_stow_rs_to_a_server_down_at_first_then_up(orthanc_server, results, tmp_path):
    sleeps = Sleeps(on_first=orthanc_server.start)
    sender = Sender(
        [parse_destination(orthanc_server.dicomweb_url)],
        tmp_path / "dead",
        RetryPolicy(attempts=3, first_delay_s=1, timeout_s=5),
        sleep=sleeps,
    )
    [delivery] = sender.deliver("job-14", [results["sr"]])
    assert delivery.ok and delivery.attempts == 2, delivery.errors
    assert "ConnectionError" in delivery.errors[0] and orthanc_server.dicomweb_url in delivery.errors[0]
    assert set(_stored(orthanc_server)) == {_uid(results["sr"])}


def test_an_http_error_is_a_failed_attempt_with_its_status(orthanc, results, tmp_path):
    # Orthanc's own REST root is not a DICOMweb service: POST <url>/studies answers 404.
    sender = Sender([parse_destination(f"{orthanc.url}/not-dicom-web")], tmp_path / "dead", RetryPolicy(attempts=1))
    [delivery] = sender.deliver("job-15", [results["sr"]])
    assert not delivery.ok and "HTTP 404" in delivery.error and orthanc.instances() == []


# --- TLS -------------------------------------------------------------------------------------------------


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1 signed by it (openssl)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder.mkdir()
    run = lambda *args: subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=60)  # noqa: E731
    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=pantherseg test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    )
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr")
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.cnf",
        "-out",
        "server.pem",
    )
    return folder / "server.pem", folder / "server.key", folder / "ca.pem"


def test_c_store_over_tls_checks_the_server_certificate(tmp_path, results):
    certificate, key, ca = _certificates(tmp_path / "pki")
    server = OrthancServer(tmp_path / "tls", tls=(certificate, key, ca))
    try:
        server.start()
        trusted = parse_destination(f"ORTHANC@127.0.0.1:{server.dicom_port}?tls=yes&ca={ca}")
        [delivery] = Sender([trusted], tmp_path / "dead", RetryPolicy(attempts=1)).deliver("job-16", [results["seg"]])
        assert delivery.ok, delivery.error
        assert set(_stored(server)) == {_uid(results["seg"])}
        # The same server with the system's CAs only: its certificate is not trusted, nothing is sent.
        untrusted = parse_destination(f"ORTHANC@127.0.0.1:{server.dicom_port}?tls=yes")
        [refused] = Sender([untrusted], tmp_path / "dead", RetryPolicy(attempts=1, timeout_s=5)).deliver(
            "job-17", [results["rtstruct"]]
        )
        assert not refused.ok and refused.dead_letter is not None
        plain = parse_destination(f"ORTHANC@127.0.0.1:{server.dicom_port}")
        [cleartext] = Sender([plain], tmp_path / "dead", RetryPolicy(attempts=1, timeout_s=5)).deliver(
            "job-18", [results["rtstruct"]]
        )
        assert not cleartext.ok
        assert set(_stored(server)) == {_uid(results["seg"])}
    finally:
        server.kill()


# --- policy and programming errors -------------------------------------------------------------------------


def test_retry_delays_grow_and_are_bounded():
    policy = RetryPolicy(attempts=8, first_delay_s=2, factor=3, max_delay_s=100)
    assert [policy.delay(k) for k in range(1, 8)] == [2, 6, 18, 54, 100, 100, 100]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"attempts": 0}, "attempts must be an integer 1-100, not 0"),
        ({"attempts": 2.5}, "attempts must be an integer"),
        ({"first_delay_s": -1}, "first_delay_s must be a number of seconds 0-86400, not -1"),
        ({"factor": 0.5}, "factor must be a number 1-10, not 0.5"),
        ({"timeout_s": 0}, "timeout_s must be above 0"),
    ],
)
def test_a_bad_retry_policy_is_refused_in_one_line(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        RetryPolicy(**kwargs)


def test_programming_errors_raise(results, tmp_path):
    sender = Sender([parse_destination("A@127.0.0.1:9")], tmp_path / "dead")
    with pytest.raises(ValueError, match="job_id"):
        sender.deliver("../escape", [results["seg"]])
    with pytest.raises(ValueError, match="kinds must be among"):
        sender.deliver("job", [results["seg"]], {results["seg"]: "mask"})
    with pytest.raises(TypeError, match="Destination objects"):
        Sender(["A@127.0.0.1:9"], tmp_path)
    with pytest.raises(ConfigError, match="Calling AE title"):
        Sender([], tmp_path, calling_ae="WAY_TOO_LONG_AE_TITLE")


# --- the harness itself --------------------------------------------------------------------------------------


def test_the_harness_stops_cleanly_and_restarts_on_its_storage(orthanc_server, results, tmp_path):
    assert not orthanc_server.running and orthanc_server.instances_or_none() is None
    orthanc_server.start()
    [delivery] = Sender([_destination(orthanc_server)], tmp_path / "dead", RetryPolicy(attempts=1)).deliver(
        "job-19", [results["seg"]]
    )
    assert delivery.ok
    orthanc_server.stop()
    assert not orthanc_server.running and orthanc_server.process.returncode == 0
    assert orthanc_server.instances_or_none() is None
    orthanc_server.start()
    assert set(_stored(orthanc_server)) == {_uid(results["seg"])}
