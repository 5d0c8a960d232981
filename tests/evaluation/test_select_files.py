"""pantherseg.evaluation.select_files: damaged inputs of ``pantherseg select`` are one-line InputErrors."""

from __future__ import annotations

import json

import pytest

from pantherseg.errors import InputError
from pantherseg.evaluation.select_files import costs_from_json, costs_from_reports, load_validation_cases


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", r"Member costs \(member -> seconds per case\) .*costs\.json is not valid JSON"),
        ("[1, 2]", r"must be a JSON object of member -> seconds per case, found list"),
        ('{"a": 1.5}', r"for every member; missing \['b'\]"),
        ('{"a": 1.5, "b": true}', r"missing \['b'\]"),
        ('{"a": 1.5, "b": -3}', r"missing \['b'\]"),
    ],
)
def test_bad_costs_file(tmp_path, text, message):
    path = tmp_path / "costs.json"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        costs_from_json(path, ["a", "b"])


def test_costs_file_that_cannot_be_read(tmp_path):
    with pytest.raises(InputError, match=r"not found: expected a JSON file at .*missing\.json"):
        costs_from_json(tmp_path / "missing.json", ["a"])
    assert costs_from_json(_write(tmp_path / "ok.json", '{"a": 2, "b": 0.5}'), ["a", "b"]) == {"a": 2.0, "b": 0.5}


@pytest.mark.parametrize(
    "report, message",
    [
        ("{truncated", r"case\.report\.json is not valid JSON"),
        (json.dumps({"task": "t1"}), r"is not a pantherseg run report"),
        (json.dumps({"members": [1, 2]}), r"is not a pantherseg run report"),
        (
            json.dumps({"members": [{"name": "a", "status": "ran", "network_s": "fast"}]}),
            r"member 'a' has no network_s",
        ),
    ],
)
def test_bad_run_report(tmp_path, report, message):
    _write(tmp_path / "case.report.json", report)
    with pytest.raises(InputError, match=message):
        costs_from_reports(tmp_path, ["a"])


def test_good_run_reports_give_the_median(tmp_path):
    for index, seconds in enumerate((1.0, 3.0, 2.0)):
        _write(
            tmp_path / f"c{index}.report.json",
            json.dumps(
                {"members": [{"name": "a", "status": "ran", "network_s": seconds}, {"name": "a2", "status": "skipped"}]}
            ),
        )
    assert costs_from_reports(tmp_path, ["a"]) == {"a": 2.0}


def test_unreadable_probability_map_is_one_line(tmp_path):
    import numpy as np
    import SimpleITK as sitk

    truth = tmp_path / "gt"
    truth.mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5, 6), np.uint8)), str(truth / "case.mha"))
    (tmp_path / "members" / "a").mkdir(parents=True)
    (tmp_path / "members" / "a" / "case.mha").write_bytes(b"not an image at all")
    with pytest.raises(InputError, match=r"cannot read the probability map .*case\.mha: ") as error:
        load_validation_cases(tmp_path / "members", truth, ["a"], tumor_label=1)
    assert "\n" not in str(error.value)


def _write(path, text):
    path.write_text(text)
    return path
