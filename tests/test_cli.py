"""The package command line: predict a folder, evaluate it, select an ensemble from it."""

from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk

from pantherseg.cli import main
from pantherseg.config import load_config

from conftest import synthetic_image


def _folder_of_cases(folder):
    folder.mkdir()
    sitk.WriteImage(synthetic_image(shape_zyx=(16, 48, 56), seed=1), str(folder / "case_a.mha"))
    sitk.WriteImage(synthetic_image(shape_zyx=(18, 50, 50), seed=2, dtype=np.int16), str(folder / "case_b.nii.gz"))
    return folder


def test_predict_evaluate_select(tiny_weights, tiny_config, tmp_path, capsys):
    cases = _folder_of_cases(tmp_path / "cases")
    out, members = tmp_path / "out", tmp_path / "members"
    code = main(
        [
            "predict",
            "-i",
            str(cases),
            "-o",
            str(out),
            "--weights",
            str(tiny_weights),
            "--config",
            str(tiny_config),
            "--device",
            "cpu",
            "--member-outputs",
            str(members),
            "-q",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / "case_a.mha"), str(out / "case_b.mha")]
    for case in ("case_a", "case_b"):
        report = json.loads((out / f"{case}.report.json").read_text())
        assert report["members_used"] == ["a-f0", "a-f1", "b-f0"]
        for name in report["members_used"]:
            image = sitk.ReadImage(str(members / name / f"{case}.mha"))
            probabilities = sitk.GetArrayFromImage(image)
            assert image.GetNumberOfComponentsPerPixel() == 2  # background, tumour
            assert probabilities.min() >= 0 and np.allclose(probabilities.sum(-1), 1, atol=1e-4)
            own_mask = sitk.GetArrayFromImage(sitk.ReadImage(str(members / name / "masks" / f"{case}.mha")))
            assert np.array_equal(own_mask, probabilities.argmax(-1) == 1)

    # Truth := member a-f0's own mask, so a-f0 alone must be among the best ensembles.
    truth = tmp_path / "truth"
    truth.mkdir()
    for case in ("case_a", "case_b"):
        (truth / f"{case}.mha").write_bytes((members / "a-f0" / "masks" / f"{case}.mha").read_bytes())

    assert main(["evaluate", "--pred", str(out), "--gt", str(truth), "--json", str(tmp_path / "m.json")]) == 0
    figures = json.loads((tmp_path / "m.json").read_text())
    assert len(figures["folders"][0]["cases"]) == 2

    new_config = tmp_path / "selected.json"
    assert (
        main(
            [
                "select",
                "--member-outputs",
                str(members),
                "--reports",
                str(out),
                "--gt",
                str(truth),
                "--config",
                str(tiny_config),
                "--out",
                str(new_config),
                "--max-steps",
                "3",
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "chosen:" in table and "all members" in table
    chosen = load_config(new_config).task("t1")
    assert "a-f0" in [m.name for m in chosen.members]
    assert chosen.members[0].weight >= chosen.members[-1].weight


def test_predict_reports_bad_cases_and_still_writes_good_ones(tiny_weights, tiny_config, tmp_path, capsys):
    cases = _folder_of_cases(tmp_path / "cases")
    (cases / "broken.mha").write_text("not an image")
    out = tmp_path / "out"
    code = main(
        [
            "predict",
            "-i",
            str(cases),
            "-o",
            str(out),
            "--weights",
            str(tiny_weights),
            "--config",
            str(tiny_config),
            "--device",
            "cpu",
            "-q",
            "--no-report",
        ]
    )
    assert code == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("pantherseg error: 1 of 3 case(s) failed: broken.mha")
    assert sorted(p.name for p in out.iterdir()) == ["case_a.mha", "case_b.mha"]


def test_unknown_task_exits_with_config_error(tiny_weights, tiny_config, tmp_path, capsys):
    cases = _folder_of_cases(tmp_path / "cases")
    code = main(
        [
            "predict",
            "-i",
            str(cases),
            "-o",
            str(tmp_path / "o"),
            "--task",
            "t9",
            "--weights",
            str(tiny_weights),
            "--config",
            str(tiny_config),
        ]
    )
    assert code == 4
    assert "Task 't9' is not in the ensemble config" in capsys.readouterr().err


def test_with_verbose_the_cause_of_a_refusal_is_logged_and_the_last_line_stays_one_line(tmp_path, capsys, caplog):
    import logging

    from pantherseg.cli import run_guarded
    from pantherseg.errors import InputError

    def refuse():
        try:
            int("twelve")
        except ValueError as error:
            raise InputError("the value is not a number") from error

    with caplog.at_level(logging.DEBUG, logger="pantherseg"):
        assert run_guarded(refuse) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "pantherseg error: the value is not a number"
    [record] = [r for r in caplog.records if "was caused by" in r.getMessage()]
    assert record.exc_info[0] is ValueError and "twelve" in str(record.exc_info[1])
