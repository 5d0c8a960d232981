"""pantherseg.engine.quality: each measure on hand-built member maps whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from pantherseg.engine import quality
from pantherseg.engine.quality import (
    assess,
    boundary_shell,
    dice,
    entropy_measures,
    input_measures,
    majority_disagreement,
    mean_pairwise_dice,
    normalised_entropy,
    score,
    tumour_mask,
    volume_spread,
)

SHAPE = (6, 10, 12)
SPACING = (2.0, 1.0, 1.0)  # 2 mm^3 per voxel: 500 voxels per ml


def box(z0, z1, y0, y1, x0, x1) -> np.ndarray:
    mask = np.zeros(SHAPE, bool)
    mask[z0:z1, y0:y1, x0:x1] = True
    return mask


def one_hot(tumour: np.ndarray, pancreas: np.ndarray | None = None) -> np.ndarray:
    """(background, tumour, pancreas) probabilities, certain everywhere."""
    pancreas = np.zeros(SHAPE, bool) if pancreas is None else pancreas & ~tumour
    return np.stack([~tumour & ~pancreas, tumour, pancreas]).astype(np.float32)


def image_with_noise(sd: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (100.0 + rng.normal(0, sd, SHAPE)).astype(np.float32)


TUMOUR = box(1, 5, 2, 8, 3, 9)  # 4 x 6 x 6 = 144 voxels
PANCREAS = box(0, 6, 1, 9, 1, 11)


def test_tumour_mask_is_each_members_own_argmax():
    probabilities = one_hot(TUMOUR, PANCREAS)
    assert np.array_equal(tumour_mask(probabilities, 1), TUMOUR)
    assert tumour_mask(probabilities, 1).dtype == bool
    assert np.array_equal(tumour_mask(probabilities, 2), PANCREAS & ~TUMOUR)


def test_dice_of_known_overlaps():
    half = box(1, 5, 2, 8, 3, 6)  # half of TUMOUR
    assert dice(TUMOUR, TUMOUR) == 1.0
    assert dice(TUMOUR, half) == pytest.approx(2 * 72 / (144 + 72))
    assert dice(TUMOUR, box(0, 1, 0, 1, 0, 1)) == 0.0
    assert dice(np.zeros(SHAPE, bool), np.zeros(SHAPE, bool)) == 1.0  # two empty masks agree
    assert dice(np.zeros(SHAPE, bool), TUMOUR) == 0.0


def test_identical_members_score_one():
    masks = {f"m{i}": TUMOUR.copy() for i in range(4)}
    result = assess(
        masks,
        one_hot(TUMOUR, PANCREAS),
        TUMOUR.astype(np.uint8),
        image_with_noise(2.0),
        spacing_zyx=SPACING,
        members_total=4,
        review_below=0.5,
    )
    measures = result["measures"]
    assert measures["mean_pairwise_dice"] == 1.0 and measures["volume_cv"] == 0.0
    assert measures["majority_disagreement"] == 0.0
    assert measures["entropy_inside"] == 0.0 and measures["entropy_boundary"] == 0.0
    assert measures["member_volumes_ml"] == [0.288] * 4  # 144 voxels x 2 mm^3
    assert result["score"] == 1.0 and result["review"] is False and result["reasons"] == []


def test_disjoint_members_score_zero_and_are_flagged():
    a, b = box(0, 2, 0, 3, 0, 3), box(4, 6, 6, 9, 8, 11)
    ensemble = a | b
    result = assess(
        {"a": a, "b": b},
        one_hot(ensemble, PANCREAS),
        ensemble,
        image_with_noise(2.0),
        spacing_zyx=SPACING,
        members_total=2,
        review_below=0.5,
    )
    assert result["measures"]["mean_pairwise_dice"] == 0.0
    # Majority = more than half of 2 = both: empty; the ensemble says a | b: they differ everywhere.
    assert result["measures"]["majority_disagreement"] == 1.0
    assert result["score"] < 0.5 and result["review"] is True
    assert any("members disagree" in reason for reason in result["reasons"])


def test_one_dissenting_member():
    """Three agree on TUMOUR, one finds nothing: Dice of pairs 3 x 1 and 3 x 0 -> 0.5; majority = ensemble."""
    masks = {"a": TUMOUR, "b": TUMOUR, "c": TUMOUR, "dissent": np.zeros(SHAPE, bool)}
    assert mean_pairwise_dice(list(masks.values())) == pytest.approx(0.5)
    assert majority_disagreement(list(masks.values()), TUMOUR) == 0.0
    spread = volume_spread(list(masks.values()), voxel_ml=0.002)
    volumes = np.array([0.288, 0.288, 0.288, 0.0])
    assert spread["volume_cv"] == pytest.approx(volumes.std() / volumes.mean())
    full = assess(masks, one_hot(TUMOUR, PANCREAS), TUMOUR, image_with_noise(2.0), spacing_zyx=SPACING, members_total=4)
    identical = assess(
        {k: TUMOUR for k in masks},
        one_hot(TUMOUR, PANCREAS),
        TUMOUR,
        image_with_noise(2.0),
        spacing_zyx=SPACING,
        members_total=4,
    )
    assert 0 < full["score"] < identical["score"] == 1.0


def test_majority_disagreement_counts_voxels_of_either_mask():
    masks = [TUMOUR, TUMOUR, box(1, 5, 2, 8, 3, 6)]  # majority = TUMOUR
    ensemble = box(1, 5, 2, 8, 3, 6)  # half of it
    assert majority_disagreement(masks, ensemble) == pytest.approx(72 / 144)
    assert majority_disagreement([np.zeros(SHAPE, bool)] * 2, np.zeros(SHAPE, bool)) == 0.0
    assert majority_disagreement([], TUMOUR) is None


def test_entropy_is_zero_when_sure_and_one_when_all_classes_are_equal():
    assert np.all(normalised_entropy(one_hot(TUMOUR)) == 0)
    even = np.full((3, *SHAPE), 1 / 3, np.float32)
    entropy = normalised_entropy(even)
    assert entropy.dtype == np.float32 and entropy.shape == SHAPE
    assert np.allclose(entropy, 1.0, atol=1e-5)
    two = np.zeros((3, *SHAPE), np.float32)
    two[0] = two[1] = 0.5  # two classes equal, the third impossible: log 2 / log 3
    assert np.allclose(normalised_entropy(two), np.log(2) / np.log(3), atol=1e-5)


def test_entropy_inside_and_on_the_boundary():
    probabilities = one_hot(TUMOUR)
    shell = boundary_shell(TUMOUR)
    probabilities[:, shell] = 1 / 3  # doubt on the boundary only
    probabilities[:, TUMOUR & ~shell] = 0
    probabilities[1, TUMOUR & ~shell] = 1
    result = entropy_measures(probabilities, TUMOUR)
    assert result["entropy_boundary"] == pytest.approx(1.0, abs=1e-5)
    assert result["entropy_inside"] == pytest.approx(float(np.mean(shell[TUMOUR])), abs=1e-5)
    assert entropy_measures(probabilities, np.zeros(SHAPE, bool)) == {"entropy_inside": None, "entropy_boundary": None}


def test_boundary_shell_of_a_box():
    """A 4 x 6 x 6 box: inside, all but its 2 x 4 x 4 core; outside, one layer on each of its six faces."""
    shell = boundary_shell(TUMOUR)
    inner = box(2, 4, 3, 7, 4, 8)
    assert not (shell & inner).any()
    assert shell[TUMOUR].sum() == 144 - inner.sum()
    assert (shell & ~TUMOUR).sum() == 2 * 6 * 6 + 2 * 4 * 6 + 2 * 4 * 6
    assert not boundary_shell(np.zeros(SHAPE, bool)).any()
    edge = np.zeros(SHAPE, bool)
    edge[0, :, :] = True  # at the image's border: nothing wraps round to the far side
    assert not boundary_shell(edge)[-1].any()


def test_noise_ratio_measures_the_noise_over_the_foreground_signal():
    foreground = PANCREAS
    quiet = input_measures(image_with_noise(1.0), foreground)["noise_ratio"]
    loud = input_measures(image_with_noise(20.0), foreground)["noise_ratio"]
    assert quiet == pytest.approx(0.01, rel=0.3) and loud == pytest.approx(0.2, rel=0.3)
    assert input_measures(image_with_noise(1.0), np.zeros(SHAPE, bool))["noise_ratio"] is None


def test_a_noisy_input_lowers_the_score_even_when_members_agree():
    masks = {f"m{i}": TUMOUR for i in range(3)}
    result = assess(
        masks,
        one_hot(TUMOUR, PANCREAS),
        TUMOUR,
        image_with_noise(40.0),
        spacing_zyx=SPACING,
        members_total=3,
        review_below=0.5,
    )
    assert result["measures"]["mean_pairwise_dice"] == 1.0
    assert result["score"] < 0.5 and result["review"]
    assert any("noisier" in reason for reason in result["reasons"])


def test_outside_training_range_only_for_fixed_unit_plans():
    image = image_with_noise(1.0)
    image[PANCREAS & (np.arange(SHAPE[2]) < 6)] = 5000.0
    properties = {"percentile_00_5": 50.0, "percentile_99_5": 200.0}
    ct = input_measures(image, PANCREAS, normalisation="CTNormalization", intensity_properties=properties)
    mri = input_measures(image, PANCREAS, normalisation="ZScoreNormalization", intensity_properties=properties)
    expected = float(np.mean((image[PANCREAS] < 50) | (image[PANCREAS] > 200)))
    assert ct["outside_training_range"] == pytest.approx(expected) and 0 < expected < 1
    assert mri["outside_training_range"] is None


def test_all_members_empty_and_nothing_found_is_full_agreement():
    empty = np.zeros(SHAPE, bool)
    result = assess(
        {"a": empty, "b": empty},
        one_hot(empty, PANCREAS),
        empty,
        image_with_noise(1.0),
        spacing_zyx=SPACING,
        members_total=2,
    )
    assert result["measures"]["mean_pairwise_dice"] == 1.0 and result["score"] == 1.0 and not result["review"]


def test_fewer_than_two_members_leaves_agreement_undefined_and_flags_the_case():
    result = assess(
        {"a": TUMOUR},
        one_hot(TUMOUR, PANCREAS),
        TUMOUR,
        image_with_noise(1.0),
        spacing_zyx=SPACING,
        members_total=6,
        skipped={f"m{i}": "projected 400 s but only 20 s left" for i in range(5)},
    )
    assert result["measures"]["mean_pairwise_dice"] is None and result["measures"]["volume_cv"] is None
    assert result["review"] is True
    assert any("only 1 of 6" in reason and "undefined" in reason for reason in result["reasons"])
    assert "5 of 6 member(s) did not contribute" in result["weakened_by"]
    assert "projected 400 s" in result["weakened_by"]
    assert result["measures"]["members_used"] == 1 and result["measures"]["members_total"] == 6


def test_no_member_ran_scores_zero():
    empty = np.zeros(SHAPE, bool)
    result = assess(
        {},
        None,
        empty,
        image_with_noise(1.0),
        spacing_zyx=SPACING,
        members_total=3,
        skipped={"a": "constant image", "b": "constant image", "c": "constant image"},
    )
    assert result["score"] == 0.0 and result["review"] is True


def test_no_pancreas_nor_tumour_found_is_flagged():
    empty = np.zeros(SHAPE, bool)
    result = assess(
        {"a": empty, "b": empty}, one_hot(empty), empty, image_with_noise(1.0), spacing_zyx=SPACING, members_total=2
    )
    assert result["review"] is True and any("neither pancreas nor tumour" in r for r in result["reasons"])


def test_score_is_in_the_unit_interval_and_falls_with_each_kind_of_doubt():
    base = {
        "mean_pairwise_dice": 1.0,
        "volume_cv": 0.0,
        "majority_disagreement": 0.0,
        "entropy_inside": 0.0,
        "entropy_boundary": 0.0,
        "noise_ratio": 0.05,
        "outside_training_range": None,
    }
    assert score(base) == 1.0
    for key, doubtful in [
        ("mean_pairwise_dice", 0.3),
        ("volume_cv", 0.9),
        ("majority_disagreement", 0.6),
        ("entropy_inside", 0.7),
        ("entropy_boundary", 0.7),
        ("noise_ratio", 0.4),
        ("outside_training_range", 0.3),
    ]:
        lowered = score({**base, key: doubtful})
        assert 0 <= lowered < 1, key
    assert score({**base, "volume_cv": 7.0, "noise_ratio": 3.0}) == 0.0


def test_the_default_threshold_is_the_configs():
    from pantherseg.config import DEFAULT_QUALITY_REVIEW_BELOW

    assert quality.DEFAULT_REVIEW_BELOW == DEFAULT_QUALITY_REVIEW_BELOW
