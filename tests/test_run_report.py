"""The run report as a value: what segment() writes reads back the same, and a damaged file is one line."""

from __future__ import annotations

import json

import pytest

from pantherseg.engine.outcomes import MemberStatus
from pantherseg.errors import OutputError
from pantherseg.run_report import ReportError, RunReport

from fakes import run_report as report


def test_a_report_reads_back_equal_through_its_file(tmp_path):
    original = report()
    path = original.write(tmp_path / "case.report.json")
    again = RunReport.read(path)
    assert again.to_json() == original.to_json()
    assert again.members_used == ["a"] and again.members[1].status is MemberStatus.SKIPPED
    assert again.tumor_volume_ml == pytest.approx(0.036)
    assert json.loads(path.read_text())["members_used"] == ["a"]  # the file keeps its documented keys


def test_a_report_without_quality_or_hash_leaves_the_keys_out():
    data = report(quality=None, run_hash=None).to_json()
    assert "quality" not in data and "run_hash" not in data
    assert RunReport.from_json(data).run_hash is None


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("task",), 7, "'task' must be str"),
        (("output", "tumor_voxels"), True, "'tumor_voxels' must be int"),
        (("output", "tumor_volume_mm3"), "NaN", "must be a finite number"),
        (("members", 0, "status"), "exploded", "status must be one of"),
        (("members",), {"a": 1}, "'members' must be list"),
        (("timings_s",), {"read": "fast"}, "timings_s must map stage names to seconds"),
        (("quality", "score"), None, "'score' must be a finite number"),
        (("quality", "reasons"), [1], "reasons must be a list of strings"),
        (("notes",), ["ok", 3], "must be lists of strings"),
    ],
)
def test_each_damaged_field_is_one_report_error_naming_it(path, value, message):
    data = report().to_json()
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ReportError, match=message):
        RunReport.from_json(data, source="case.report.json")


def test_a_missing_field_and_a_top_level_of_another_type_are_refused():
    data = report().to_json()
    del data["device"]
    with pytest.raises(ReportError, match="'device' is missing"):
        RunReport.from_json(data)
    with pytest.raises(ReportError, match="must be a JSON object, found list"):
        RunReport.from_json([])


def test_a_report_file_that_is_not_json_is_one_line(tmp_path):
    (tmp_path / "case.report.json").write_text("{not json")
    with pytest.raises(ReportError, match="is not valid JSON"):
        RunReport.read(tmp_path / "case.report.json")


def test_a_report_that_cannot_be_written_is_one_output_error_line(tmp_path):
    (tmp_path / "run_report.json").mkdir()
    with pytest.raises(OutputError, match="Cannot write the run report") as raised:
        report().write(tmp_path / "run_report.json")
    assert isinstance(raised.value.__cause__, OSError)  # kept for -v
