"""The cohort route in one process (pantherseg.cohort.local_runner, run.py, options.py) on the demo zoo.

Eight small cases (two named ``same`` in different subfolders), a corrupt file and a 2D image: the bad
ones become error rows, the masks equal the single-process ``segment()`` route, a rerun skips every
finished case, and ``--num-parts/--part-id`` processes cover the cohort exactly once.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from pantherseg.cli import main
from pantherseg.cohort.progress import CohortProgress
from pantherseg.cohort.run import run_cohort
from pantherseg.paths import default_weights

from cohort_fixtures import BAD, GOOD, read_mask, requires_zoo, shared_reference_masks, small_config, write_cohort

pytestmark = requires_zoo


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    return write_cohort(root / "cases"), small_config(root / "config.json")


@pytest.fixture(scope="module")
def first_run(cohort, tmp_path_factory):
    cases, config = cohort
    out = tmp_path_factory.mktemp("local") / "masks"
    report = run_cohort(
        cases,
        output_dir=out,
        config=config,
        weights=default_weights(),
        device="cpu",
        backend="torch",
        time_budget_s=float("inf"),
    )
    return out, report


def test_bad_cases_are_error_rows_and_every_good_case_is_done(first_run):
    out, report = first_run
    status = {row.name: row.status for row in report.rows}
    assert status == {**{name: "done" for name in GOOD}, **{name: "error" for name in BAD}}
    for row in report.failed:
        assert BAD[row.name] in row.error and "\n" not in row.error
        assert not (out / f"{row.name}.mha").exists()
    done = [row for row in report.rows if row.status == "done"]
    assert all(row.members_used == ["allrounder-f0"] and row.stages_s["network"] > 0 for row in done)
    saved = json.loads((out / "cohort_report.json").read_text())
    assert saved["totals"]["done"] == 8 and saved["totals"]["error"] == 2 and saved["totals"]["cases_per_hour"] > 0
    assert json.loads((out / "a__same.report.json").read_text())["run_hash"] == report.run_hash


def test_masks_equal_the_single_process_route(first_run, tmp_path_factory):
    out, _ = first_run
    reference = shared_reference_masks(tmp_path_factory)
    assert sorted(reference) == sorted(GOOD)
    for name, expected in reference.items():
        np.testing.assert_array_equal(read_mask(out / f"{name}.mha"), expected, err_msg=name)
    assert any(mask.any() for mask in reference.values())  # not all empty: the comparison means something


def test_a_rerun_skips_every_finished_case_and_retries_only_the_failed(first_run, cohort):
    out, first = first_run
    cases, config = cohort
    stamps = {name: (out / f"{name}.mha").stat().st_mtime_ns for name in GOOD}
    again = run_cohort(
        cases,
        output_dir=out,
        config=config,
        weights=default_weights(),
        device="cpu",
        backend="torch",
        time_budget_s=float("inf"),
    )
    assert {row.name for row in again.rows if row.status == "skipped"} == set(GOOD)
    assert {row.name for row in again.rows if row.status == "error"} == set(BAD)
    assert again.run_hash == first.run_hash
    assert stamps == {name: (out / f"{name}.mha").stat().st_mtime_ns for name in GOOD}  # untouched


def test_parts_from_the_command_line_cover_the_cohort_exactly_once(first_run, cohort, capsys):
    out, _ = first_run
    cases, config = cohort
    seen = []
    for part in range(3):
        code = main(
            [
                "predict",
                "-i",
                str(cases),
                "-o",
                str(out),
                "--config",
                str(config),
                "--device",
                "cpu",
                "--backend",
                "torch",
                "--num-parts",
                "3",
                "--part-id",
                str(part),
                "-q",
            ]
        )
        report = json.loads((out / f"cohort_report.part-{part}-of-3.json").read_text())
        names = [row["name"] for row in report["cases"]]
        seen += names
        assert code == (1 if set(names) & set(BAD) else 0)
        assert all(row["status"] == "skipped" for row in report["cases"] if row["name"] in GOOD)
    assert sorted(seen) == sorted(GOOD + list(BAD))
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert last_line.startswith("pantherseg error: 2 of 3 case(s) failed (see ")  # part 2: broken, case2, flat


def test_cohort_flags_that_cannot_work_are_refused(cohort, tmp_path, capsys):
    cases, config = cohort
    assert main(["predict", "-i", str(cases), "-o", str(tmp_path), "--num-parts", "2", "--part-id", "2"]) == 2
    assert (
        capsys.readouterr().err.strip().splitlines()[-1]
        == "pantherseg error: --part-id must be in [0, 1] for --num-parts 2, found 2."
    )
    assert main(["predict", "-i", str(cases), "-o", str(tmp_path), "--resume", "--no-report"]) == 2
    assert "--no-report cannot be used" in capsys.readouterr().err
    assert main(["predict", "-i", str(cases), "-o", str(tmp_path), "--part-id", "1"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "pantherseg error: --part-id needs --num-parts."
    # Out-of-range numbers are usage errors of the flag's own type (tests/test_options.py): exit 2, one line.
    for flags, message in [
        (["--ray", "--ray-workers", "0"], "argument --ray-workers: must be an integer of at least 1, found '0'"),
        (["--ray", "--max-retries", "-1"], "argument --max-retries: must be an integer in [0, 1000], found '-1'"),
    ]:
        with pytest.raises(SystemExit) as caught:
            main(["predict", "-i", str(cases), "-o", str(tmp_path), *flags])
        assert caught.value.code == 2
        assert capsys.readouterr().err.strip().splitlines()[-1] == f"pantherseg error: {message}"


class StopAfterFirstCase(CohortProgress):
    def case_finished(self, row):
        raise KeyboardInterrupt  # what run_guarded turns SIGTERM into


def test_an_interrupted_run_still_writes_the_cohort_report_with_the_finished_cases(cohort, tmp_path):
    cases, config = cohort
    files = [cases / "case0.mha", cases / "case1.mha"]
    with pytest.raises(KeyboardInterrupt):
        run_cohort(
            files,
            output_dir=tmp_path,
            config=config,
            weights=default_weights(),
            device="cpu",
            backend="torch",
            progress=StopAfterFirstCase(),
        )
    report = json.loads((tmp_path / "cohort_report.json").read_text())
    assert [(row["name"], row["status"]) for row in report["cases"]] == [("case0", "done")]
    assert (tmp_path / "case0.mha").is_file() and not (tmp_path / "case1.mha").exists()


def test_an_interrupted_cohort_says_how_many_cases_finished(cohort, tmp_path, capsys, monkeypatch):
    # Ray workers write in other processes, so the line comes from the cohort report, not this process.
    from pantherseg import run_state
    from pantherseg.cli import run_guarded

    monkeypatch.setattr(run_state, "_cohort_summary", [])
    cases, config = cohort
    files = [cases / "case0.mha", cases / "case1.mha"]
    code = run_guarded(
        run_cohort,
        files,
        output_dir=tmp_path,
        config=config,
        weights=default_weights(),
        device="cpu",
        backend="torch",
        progress=StopAfterFirstCase(),
    )
    assert code == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"pantherseg error: interrupted: 1 of 2 case(s) finished with mask and report "
        f"(see {tmp_path.absolute() / 'cohort_report'}.csv); the same command again does the rest."
    )
