"""pantherseg.cohort.resume: the run hash follows config and weights; the skip decision is strict."""

from __future__ import annotations

import dataclasses
import shutil

import pytest

from pantherseg.cohort.cases import Case
from pantherseg.cohort.resume import finished_report, run_hash
from pantherseg.config import load_config
from pantherseg.errors import ModelError
from pantherseg.run_report import OutputRecord

from fakes import run_report


@pytest.fixture
def weights_copy(tiny_weights, tmp_path):
    return shutil.copytree(tiny_weights, tmp_path / "weights")


def test_the_hash_is_stable_and_follows_the_checkpoint_bytes(tiny_config, weights_copy):
    config = load_config(tiny_config)
    first = run_hash(config, "t1", weights_copy)
    assert first == run_hash(load_config(tiny_config), "t1", weights_copy)
    assert len(first) == 64
    checkpoint = next(weights_copy.rglob("fold_1/checkpoint_final.pth"))
    checkpoint.write_bytes(checkpoint.read_bytes() + b"\0")
    assert run_hash(config, "t1", weights_copy) != first


def test_the_hash_follows_the_task_config_and_the_overrides_only(tiny_config, weights_copy):
    config = load_config(tiny_config)
    base = run_hash(config, "t1", weights_copy)
    t1 = config.tasks["t1"]
    reweighted = dataclasses.replace(t1, members=(dataclasses.replace(t1.members[0], weight=3.0), *t1.members[1:]))
    assert run_hash(dataclasses.replace(config, tasks={**config.tasks, "t1": reweighted}), "t1", weights_copy) != base
    assert run_hash(dataclasses.replace(config, tile_step_size=0.7), "t1", weights_copy) != base
    assert run_hash(config, "t1", weights_copy, precision="bf16") != base
    # Another task's members do not decide Task 1's masks.
    t2 = config.tasks["t2"]
    other = dataclasses.replace(config, tasks={**config.tasks, "t2": dataclasses.replace(t2, members=t2.members[:0])})
    assert run_hash(other, "t1", weights_copy) == base


def test_a_missing_member_file_is_a_model_error(tiny_config, weights_copy):
    next(weights_copy.rglob("fold_0/checkpoint_final.pth")).unlink()
    with pytest.raises(ModelError, match="member 'a-f0'.*file not found"):
        run_hash(load_config(tiny_config), "t1", weights_copy)


def write_finished(out, case, run_hash_value, *, input_path=None, mask=True):
    out.mkdir(exist_ok=True)
    if mask:
        (out / f"{case.name}.mha").write_bytes(b"mask")
    mask_file = str(out / f"{case.name}.mha")
    report = run_report(
        input={"path": str(input_path or case.path)},
        run_hash=run_hash_value,
        output=OutputRecord(path=mask_file, paths=(mask_file,), tumor_voxels=1, tumor_volume_mm3=1.0),
    )
    report.write(out / f"{case.name}.report.json")


def test_a_case_is_finished_only_with_mask_report_same_hash_and_same_input(tmp_path):
    case = Case("sub__x", tmp_path / "in" / "sub" / "x.mha")
    out = tmp_path / "out"
    assert finished_report(case, out, "h") is None  # nothing there
    write_finished(out, case, "h")
    assert finished_report(case, out, "h").members_used == ["a"]
    assert finished_report(case, out, "h", formats=("mha", "nii.gz")) is None  # a format the case lacks
    assert finished_report(case, out, "other") is None  # another config or other weights
    write_finished(out, case, "h", input_path=tmp_path / "elsewhere.mha")
    assert finished_report(case, out, "h") is None  # the report is about another file
    write_finished(out, case, "h")
    (out / "sub__x.mha").unlink()
    assert finished_report(case, out, "h") is None  # killed before the mask was renamed into place
    write_finished(out, case, "h")
    (out / "sub__x.report.json").write_text('{"run_hash": "h", "input": ')
    assert finished_report(case, out, "h") is None  # unreadable report: run again


# --- issue 20: a tampered report is a case to run again, never a traceback ------------------------------


@pytest.mark.parametrize(
    "content",
    [
        '{"run_hash": "H", "input": "not an object", "output": {"path": "c.mha"}}',
        '{"run_hash": "H", "input": {"path": 7}, "output": {"path": "c.mha"}}',
        '{"run_hash": "H", "input": {"path": "IN"}, "output": {"path": ["c.mha"]}}',
        '{"run_hash": "H", "input": {"path": "IN"}, "output": {"path": "c.mha"}, "members_used": 5}',
        '{"run_hash": "H", "input": {"path": "IN"}, "output": {"path": "c.mha"}, "device": {"x": 1}}',
        "[" * 100_000,
        '{"run_hash": ' + "9" * 5000 + "}",
        "[1, 2, 3]",
    ],
)
def test_a_tampered_report_means_the_case_runs_again(tmp_path, content):
    from pantherseg.cohort.cases import Case
    from pantherseg.cohort.resume import finished_report, report_path

    source = tmp_path / "c.mha"
    source.write_bytes(b"x")
    case = Case(name="c", path=source)
    out = tmp_path / "out"
    out.mkdir()
    (out / "c.mha").write_bytes(b"mask")
    report_path(out, case).write_text(content.replace("IN", str(source)))
    assert finished_report(case, out, "H") is None


def test_a_fifo_as_the_report_does_not_block(tmp_path):
    import os

    from pantherseg.cohort.cases import Case
    from pantherseg.cohort.resume import finished_report, report_path

    case = Case(name="c", path=tmp_path / "c.mha")
    (tmp_path / "c.mha").write_bytes(b"mask")
    os.mkfifo(report_path(tmp_path, case))
    assert finished_report(case, tmp_path, "H") is None
