"""The quality block end to end: run report, the log's last line, --output-format uncertainty, the deadline."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import SimpleITK as sitk

from pantherseg.api import segment
from pantherseg.config import load_config
from pantherseg.errors import InputError
from pantherseg.io.outputs import check_output_formats

from conftest import synthetic_image


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    folder = tmp_path_factory.mktemp("in")
    image = synthetic_image(shape_zyx=(10, 32, 40), seed=1)
    sitk.WriteImage(image, str(folder / "case.mha"))
    return folder / "case.mha", image


def _run(case, tiny_weights, tiny_config, out, caplog, **fields):
    path, _ = case
    with caplog.at_level(logging.INFO, logger="pantherseg"):
        result = segment(
            path,
            output_dir=out,
            task="t1",
            config=tiny_config,
            weights=tiny_weights,
            device="cpu",
            report_dir=out,
            time_budget_s=float("inf"),
            **fields,
        )[0]
    return result


def test_report_and_log_carry_the_score_and_the_uncertainty_map_has_the_inputs_geometry(
    case, tiny_weights, tiny_config, tmp_path, caplog
):
    result = _run(case, tiny_weights, tiny_config, tmp_path, caplog, output_formats=("uncertainty", "mha"))
    report = json.loads((tmp_path / "case.report.json").read_text())
    quality = report["quality"]
    assert 0.0 <= quality["score"] <= 1.0 and isinstance(quality["review"], bool)
    assert quality["review"] == bool(quality["reasons"])
    assert quality["review_below"] == load_config(tiny_config).quality_review_below
    measures = quality["measures"]
    assert measures["members_used"] == measures["members_total"] == 3
    assert len(measures["member_volumes_ml"]) == 3 and 0 <= measures["mean_pairwise_dice"] <= 1
    # The mask comes first whatever the order asked; the map beside it.
    assert report["output"]["paths"] == [str(tmp_path / "case.mha"), str(tmp_path / "case.uncertainty.mha")]
    assert result.output == tmp_path / "case.mha"

    last = [r for r in caplog.records if r.name == "pantherseg.api"][-1].getMessage()
    assert last.startswith(f"case.mha: quality score {quality['score']:.2f}")
    assert ("REVIEW" in last) == quality["review"]

    _, image = case
    uncertainty = sitk.ReadImage(str(tmp_path / "case.uncertainty.mha"))
    assert uncertainty.GetPixelID() == sitk.sitkFloat32
    assert uncertainty.GetSize() == image.GetSize()
    for get in ("GetOrigin", "GetSpacing", "GetDirection"):
        assert np.allclose(getattr(uncertainty, get)(), getattr(image, get)())
    values = sitk.GetArrayFromImage(uncertainty)
    assert values.min() >= 0 and values.max() <= 1 and values.max() > 0


def test_a_threshold_of_one_flags_every_case_and_zero_none(case, tiny_weights, tiny_config, tmp_path, caplog):
    raw = json.loads(tiny_config.read_text())
    scores = []
    for threshold in (1.0, 0.0):
        config = tmp_path / f"config-{threshold}.json"
        config.write_text(json.dumps({**raw, "quality_review_below": threshold}))
        out = tmp_path / str(threshold)
        quality = _run(case, tiny_weights, config, out, caplog).report.quality
        scores.append(quality["score"])
        if threshold == 1.0 and quality["score"] < 1:
            assert quality["review"] and any("below the review threshold 1.00" in r for r in quality["reasons"])
        if threshold == 0.0:
            assert not any("below the review threshold" in r for r in quality["reasons"])
    assert scores[0] == scores[1]  # the threshold flags; it does not change the score


def test_the_uncertainty_map_alone_is_refused_it_goes_beside_a_mask(tmp_path):
    with pytest.raises(InputError, match="uncertainty is written beside a mask; add one of mha"):
        check_output_formats(["uncertainty"], [tmp_path / "case.mha"])
    assert check_output_formats(["uncertainty", "nii.gz"], [tmp_path / "case.mha"]) == ("nii.gz", "uncertainty")
