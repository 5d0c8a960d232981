"""Challenge metrics on tiny arrays whose answers are known by hand or from the library."""

import math

import numpy as np
import pytest
from surface_distance import metrics as sd

from pantherseg.errors import InputError
from pantherseg.evaluation.metrics import (
    Aggregate,
    CaseMetrics,
    aggregate,
    binarise,
    case_metrics,
    image_diagonal_mm,
    leaderboard,
    positions,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # scipy.ndimage.filters use


def cube(shape=(10, 10, 10), start=(2, 2, 2), size=4):
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(s, s + size) for s in start)] = True
    return mask


TRUTH = cube()
SHIFTED = cube(start=(3, 2, 2))  # one voxel further along axis 0 (z)


def library_figures(pred, truth, spacing):
    distances = sd.compute_surface_distances(truth, pred, spacing)
    a, b = sd.compute_average_surface_distance(distances)
    return (
        sd.compute_dice_coefficient(truth, pred),
        sd.compute_surface_dice_at_tolerance(distances, 5),
        sd.compute_robust_hausdorff(distances, 95),
        (a + b) / 2,
    )


def test_shifted_cube_isotropic_by_hand():
    m = case_metrics(SHIFTED, TRUTH, (1.0, 1.0, 1.0))
    assert m.dice == pytest.approx(2 * 48 / 128)  # 3 of 4 slabs overlap
    assert m.surface_dice == pytest.approx(1.0)  # every surface point within 1 mm of the other
    assert m.hd95 == pytest.approx(1.0)
    assert 0 < m.masd < 1.0
    assert m.pred_volume == m.truth_volume == 64.0
    assert m.rule == "surface-distance"


def test_anisotropic_spacing_follows_array_axis_order():
    # The shift is along axis 0; 3 mm there makes it a 3 mm shift, 1 mm there a 1 mm shift.
    along_shift = case_metrics(SHIFTED, TRUTH, (3.0, 1.0, 1.0))
    across_shift = case_metrics(SHIFTED, TRUTH, (1.0, 1.0, 3.0))
    assert along_shift.hd95 == pytest.approx(3.0)
    assert across_shift.hd95 == pytest.approx(1.0)
    assert along_shift.masd != pytest.approx(across_shift.masd)
    assert along_shift.dice == across_shift.dice == pytest.approx(0.75)
    assert along_shift.pred_volume == across_shift.pred_volume == 64 * 3.0


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (3.0, 1.0, 1.0), (1.0, 2.0, 0.7)])
@pytest.mark.parametrize(
    "pred",
    [SHIFTED, cube(start=(4, 3, 1)), cube(size=3), cube(size=6)],
    ids=["shift-z", "shift-zyx", "inside", "around"],
)
def test_every_figure_equals_the_library(pred, spacing):
    m = case_metrics(pred, TRUTH, spacing)
    dice, surface_dice, hd95, masd = library_figures(pred, TRUTH, spacing)
    assert m.dice == pytest.approx(dice, abs=1e-6)
    assert m.surface_dice == pytest.approx(surface_dice, abs=1e-6)
    assert m.hd95 == pytest.approx(hd95, abs=1e-6)
    assert m.masd == pytest.approx(masd, abs=1e-6)
    voxel = float(np.prod(spacing))
    assert m.pred_volume == pytest.approx(pred.sum() * voxel, abs=1e-6)
    assert m.truth_volume == pytest.approx(TRUTH.sum() * voxel, abs=1e-6)


def test_surface_dice_below_one_beyond_tolerance():
    far = cube(start=(4, 2, 2))  # 2 voxels x 3 mm = 6 mm shift > 5 mm tolerance
    m = case_metrics(far, TRUTH, (3.0, 1.0, 1.0))
    assert 0 < m.surface_dice < 1
    assert m.hd95 == pytest.approx(6.0)
    assert m.surface_dice == pytest.approx(library_figures(far, TRUTH, (3.0, 1.0, 1.0))[1])


def test_empty_prediction_scores_the_diagonal():
    shape, spacing = (8, 10, 12), (3.0, 2.0, 1.0)
    truth = cube(shape=shape, size=3)
    m = case_metrics(np.zeros(shape, bool), truth, spacing)
    diagonal = math.sqrt(24**2 + 20**2 + 12**2)
    assert (m.dice, m.surface_dice) == (0.0, 0.0)
    assert m.hd95 == m.masd == pytest.approx(diagonal)
    assert (m.pred_volume, m.truth_volume) == (0.0, 27 * 6.0)
    assert m.rule == "uniform prediction"


def test_all_tumour_prediction_scores_the_diagonal_with_its_real_volume():
    m = case_metrics(np.ones((5, 5, 5), bool), cube(shape=(5, 5, 5), size=2), (2.0, 1.0, 1.0))
    assert (m.dice, m.surface_dice) == (0.0, 0.0)
    assert m.hd95 == m.masd == pytest.approx(math.sqrt(10**2 + 5**2 + 5**2))
    assert m.pred_volume == 125 * 2.0
    assert m.rule == "uniform prediction"


def test_both_empty_is_a_perfect_answer():
    empty = np.zeros((4, 4, 4), bool)
    m = case_metrics(empty, empty, (1.0, 1.0, 1.0))
    assert (m.dice, m.surface_dice, m.hd95, m.masd) == (1.0, 1.0, 0.0, 0.0)
    assert (m.pred_volume, m.truth_volume) == (0.0, 0.0)
    assert m.rule == "both empty"


def test_empty_truth_with_a_prediction_scores_the_diagonal():
    m = case_metrics(cube(), np.zeros((10, 10, 10), bool), (1.0, 1.0, 2.0))
    assert (m.dice, m.surface_dice) == (0.0, 0.0)
    assert m.hd95 == m.masd == pytest.approx(math.sqrt(10**2 + 10**2 + 20**2))
    assert (m.pred_volume, m.truth_volume) == (128.0, 0.0)
    assert m.rule == "empty truth"


def test_image_diagonal():
    assert image_diagonal_mm((3, 4, 12), (1, 1, 1)) == pytest.approx(13.0)


@pytest.mark.parametrize("values", [[0, 1], [0, 2], [0, 255], [2], [0], [0.0, 0.5]])
def test_binarise_accepts_zero_and_one_positive_label(values):
    labels = np.array(values * 2).reshape(len(values), 2)
    np.testing.assert_array_equal(binarise(labels, "x"), labels > 0)


@pytest.mark.parametrize("values, shown", [([0, 1, 2], "{0, 1, 2}"), ([0, -1], "{-1, 0}"), ([1, 2], "{1, 2}")])
def test_binarise_rejects_other_label_sets_naming_file_and_values(values, shown):
    with pytest.raises(InputError) as info:
        binarise(np.array(values), "case_007.mha")
    assert "case_007.mha" in str(info.value) and shown in str(info.value)


def test_binarise_rejects_nan():
    with pytest.raises(InputError, match="NaN"):
        binarise(np.array([0.0, np.nan]), "p.mha")


def test_shape_mismatch_and_bad_arguments():
    with pytest.raises(InputError, match="shape"):
        case_metrics(cube(shape=(10, 10, 9)), TRUTH, (1, 1, 1))
    with pytest.raises(InputError, match="spacing"):
        case_metrics(SHIFTED, TRUTH, (1, 1))
    with pytest.raises(TypeError, match="boolean"):
        case_metrics(SHIFTED.astype(np.uint8), TRUTH, (1, 1, 1))


def test_aggregate_means_and_volume_rmse():
    cases = [
        CaseMetrics(1.0, 0.5, 2.0, 1.0, pred_volume=100.0, truth_volume=70.0, rule="x"),
        CaseMetrics(0.5, 1.0, 4.0, 3.0, pred_volume=0.0, truth_volume=40.0, rule="x"),
    ]
    a = aggregate(cases)
    assert (a.dice, a.surface_dice, a.hd95, a.masd, a.n_cases) == (0.75, 0.75, 3.0, 2.0, 2)
    assert a.volume_rmse == pytest.approx(math.sqrt((30**2 + 40**2) / 2))
    with pytest.raises(ValueError):
        aggregate([])


def test_positions_share_the_best_place_on_ties():
    assert positions([0.9, 0.8, 0.9], higher_is_better=True) == [1, 3, 1]
    assert positions([5.0, 2.0, 2.0, 1.0], higher_is_better=False) == [4, 2, 2, 1]


def test_leaderboard_scores_are_mean_positions():
    results = {
        "a": Aggregate(dice=0.7, surface_dice=0.9, hd95=10.0, masd=2.0, volume_rmse=100.0, n_cases=3),
        "b": Aggregate(dice=0.7, surface_dice=0.8, hd95=8.0, masd=2.0, volume_rmse=300.0, n_cases=3),
        "c": Aggregate(dice=0.6, surface_dice=0.95, hd95=12.0, masd=1.0, volume_rmse=200.0, n_cases=3),
    }
    board = {e.name: e for e in leaderboard(results)}
    assert board["a"].positions == {"dice": 1, "surface_dice": 2, "hd95": 2, "masd": 2, "volume_rmse": 1}
    assert board["b"].positions == {"dice": 1, "surface_dice": 3, "hd95": 1, "masd": 2, "volume_rmse": 3}
    assert board["c"].positions == {"dice": 3, "surface_dice": 1, "hd95": 3, "masd": 1, "volume_rmse": 2}
    assert (board["a"].score, board["b"].score, board["c"].score) == (1.6, 2.0, 2.0)
    assert [e.name for e in leaderboard(results)] == ["a", "b", "c"]
    assert (board["a"].rank, board["b"].rank, board["c"].rank) == (1, 2, 2)
