"""pantherseg.api: the inputs a run takes, one case on a loaded ensemble, and what a case leaves behind."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from pantherseg.api import collect_inputs, load_ensemble, segment, segment_case
from pantherseg.errors import InputError
from pantherseg.options import RunOptions

from conftest import synthetic_image


@pytest.fixture
def micro(micro_weights, tmp_path):
    weights, config = micro_weights
    path = tmp_path / "in" / "case.mha"
    path.parent.mkdir()
    sitk.WriteImage(synthetic_image((8, 16, 16), seed=4), str(path))
    return RunOptions(
        task="t2", config=config, weights=weights, device="cpu", backend="torch", time_budget_s=float("inf")
    ), path


def test_inputs_are_files_and_folders_sorted_with_unique_stems(tmp_path):
    for name in ("b.mha", "a.nii.gz", "notes.txt"):
        (tmp_path / "in" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "in" / name).write_bytes(b"x")
    assert [p.name for p in collect_inputs(tmp_path / "in")] == ["a.nii.gz", "b.mha"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.mha").write_bytes(b"x")
    with pytest.raises(InputError, match=r"would write the same mask name \['a'\]"):
        collect_inputs([tmp_path / "in", tmp_path / "other" / "a.mha"])
    with pytest.raises(InputError, match="Input not found"):
        collect_inputs(tmp_path / "missing.mha")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="No images in"):
        collect_inputs(tmp_path / "empty")


def test_one_ensemble_segments_case_after_case_under_the_names_given(micro, tmp_path):
    options, path = micro
    ensemble = load_ensemble(options)
    assert ensemble.keep_networks and ensemble.networks == {}  # built when a member first runs
    out = tmp_path / "out"
    case_options = options.but(output_formats=("nii.gz", "uncertainty"), report_dir=out)
    first = segment_case(ensemble, path, output_dir=out, options=case_options, name="first", run_hash="h1")
    networks = dict(ensemble.networks)
    second = segment_case(ensemble, path, output_dir=out, options=case_options, name="second")
    assert ensemble.networks == networks  # kept: built once for both cases
    assert sorted(p.name for p in out.iterdir()) == [
        "first.nii.gz",
        "first.report.json",
        "first.uncertainty.mha",
        "second.nii.gz",
        "second.report.json",
        "second.uncertainty.mha",
    ]
    assert first.output == out / "first.nii.gz" and first.report.run_hash == "h1" and second.report.run_hash is None
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(sitk.ReadImage(str(first.output))),
        sitk.GetArrayFromImage(sitk.ReadImage(str(second.output))),
    )
    saved = json.loads((out / "first.report.json").read_text())
    assert saved == first.report.to_json()
    assert list(saved["timings_s"])[:2] == ["load", "read"] and list(saved["timings_s"])[-1] == "write"


def test_a_single_case_frees_each_network_after_its_member(micro, tmp_path):
    options, path = micro
    released = load_ensemble(options, keep_networks=False)
    segment_case(released, path, output_dir=tmp_path / "out", options=options)
    assert released.networks == {}


def test_an_output_that_would_overwrite_the_input_is_refused_before_predicting(micro, monkeypatch):
    options, path = micro
    ensemble = load_ensemble(options)
    monkeypatch.setattr(ensemble, "predict", lambda *a, **k: pytest.fail("predicted"))
    with pytest.raises(InputError, match="would overwrite its input"):
        segment_case(ensemble, path, output_dir=path.parent, options=options.but(output_formats=("mha",)))


def test_a_bad_case_is_returned_with_its_reason_and_the_good_one_still_written(micro, tmp_path):
    options, path = micro
    broken = path.parent / "broken.mha"
    broken.write_bytes(b"not an image")
    results = segment(path.parent, output_dir=tmp_path / "out", options=options.but(stop_on_error=False))
    by_name = {r.input.name: r for r in results}
    assert by_name["broken.mha"].output is None and "cannot be read" in by_name["broken.mha"].error
    assert by_name["case.mha"].output == tmp_path / "out" / "case.mha" and by_name["case.mha"].error is None
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["case.mha"]
