"""Ensemble selection on tiny synthetic probability maps whose best ensemble is known."""

import numpy as np
import pytest

from pantherseg.errors import InputError, ResourceError
from pantherseg.evaluation.metrics import Aggregate
from pantherseg.evaluation.selection import (
    ValidationCase,
    format_comparison,
    ranking_objective,
    select_ensemble,
    weighted_objective,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # scipy.ndimage.filters use

SHAPE = (12, 12, 12)
SPACING = (1.0, 1.0, 1.0)
A = (slice(1, 4), slice(1, 4), slice(1, 4))  # tumour
B = (slice(1, 4), slice(7, 10), slice(7, 10))  # tumour
C = (slice(8, 11), slice(1, 4), slice(7, 10))  # not tumour


def truth(*regions):
    mask = np.zeros(SHAPE, bool)
    for region in regions:
        mask[region] = True
    return mask


def prob(**values):
    """A probability map: 0.05 background, ``values`` = {"A": p, ...} inside the named regions."""
    out = np.full(SHAPE, 0.05, np.float32)
    for region, p in values.items():
        out[globals()[region]] = p
    return out


def case(probabilities, *regions, name="case"):
    return ValidationCase(name, probabilities, truth(*regions), SPACING)


def test_perfect_member_is_chosen_alone():
    cases = [case({"good": prob(A=0.9, B=0.8), "half": prob(A=0.9), "wrong": prob(C=0.9)}, A, B)]
    result = select_ensemble(cases, {"good": 1.0, "half": 1.0, "wrong": 1.0}, budget_s=10.0)
    assert result.weights == {"good": 1}
    assert result.aggregate.dice == 1.0
    labels = [row.candidate.label for row in result.comparison]
    assert labels[0] in ("chosen: good", "good")
    assert set(labels) == {"chosen: good", "good", "half", "wrong", "all members"}


def test_complementary_members_are_combined():
    # Each member is sure of one tumour and unsure (0.45) of the other: only their mean finds both.
    members = {"m1": prob(A=0.9, B=0.45), "m2": prob(A=0.45, B=0.9)}
    result = select_ensemble([case(members, A, B)], {"m1": 1.0, "m2": 2.0}, budget_s=5.0)
    assert result.weights == {"m1": 1, "m2": 1}
    assert result.cost_s == 3.0
    assert result.aggregate.dice == 1.0
    assert [c.weights for c in result.path[:2]] == [{"m1": 1}, {"m1": 1, "m2": 1}]


def test_budget_excludes_members():
    members = {"m1": prob(A=0.9, B=0.45), "m2": prob(A=0.45, B=0.9), "slow": prob(A=0.9, B=0.9)}
    costs = {"m1": 1.0, "m2": 2.0, "slow": 100.0}
    result = select_ensemble([case(members, A, B)], costs, budget_s=2.5)
    assert "slow" not in result.weights
    assert len(result.weights) == 1  # m1 + m2 (3 s) does not fit 2.5 s either
    assert result.cost_s <= 2.5
    rows = {row.candidate.label: row.candidate for row in result.comparison}
    assert not rows["all members"].within_budget
    assert not rows["slow"].within_budget and rows["slow"].aggregate.dice == 1.0
    assert "over budget" in format_comparison(result)


def test_selection_with_replacement_finds_weight_two():
    # m1 finds A, half-believes B; m2 finds B but has a false positive C.
    # 1:1 keeps C (0.55); 2:1 drops it (0.4) and keeps A (0.67) and B (0.6).
    members = {"m1": prob(A=0.9, B=0.4, C=0.1), "m2": prob(A=0.2, B=1.0, C=1.0)}
    result = select_ensemble(
        [case(members, A, B)],
        {"m1": 1.0, "m2": 1.0},
        budget_s=5.0,
        objective=weighted_objective({"dice": 1.0}),
        max_steps=5,
    )
    assert result.weights == {"m1": 2, "m2": 1}
    assert result.aggregate.dice == 1.0
    assert result.cost_s == 2.0  # a member chosen twice is run once


def test_several_cases_are_aggregated():
    cases = [
        case({"x": prob(A=0.9), "y": prob(B=0.9)}, A, name="1"),
        case({"x": prob(A=0.9), "y": prob(B=0.9)}, A, name="2"),
        case({"x": prob(A=0.9), "y": prob(B=0.9)}, B, name="3"),
    ]
    result = select_ensemble(cases, {"x": 1.0, "y": 1.0}, budget_s=1.0)
    # x is right on two of three cases, y on one; the budget allows one member.
    assert result.weights == {"x": 1}
    assert result.aggregate.n_cases == 3


def aggregate(dice, hd95):
    return Aggregate(dice=dice, surface_dice=dice, hd95=hd95, masd=hd95, volume_rmse=hd95, n_cases=1)


def test_objectives():
    pool = {"p": aggregate(0.8, 2.0), "q": aggregate(0.6, 4.0), "r": aggregate(0.8, 6.0)}
    assert ranking_objective(pool) == {
        "p": 1.0,
        "q": pytest.approx((3 + 3 + 2 + 2 + 2) / 5),
        "r": pytest.approx((1 + 1 + 3 + 3 + 3) / 5),
    }
    scores = weighted_objective({"dice": 2.0, "hd95": 1.0})(pool)
    assert scores == {"p": 0.0, "q": pytest.approx(2.0 + 0.5), "r": pytest.approx(1.0)}


def test_input_errors():
    good = {"m": prob(A=0.9)}
    with pytest.raises(InputError, match="no cost"):
        select_ensemble([case(good, A)], {}, budget_s=1.0)
    with pytest.raises(ResourceError, match="cheapest, m, takes 5.0 s"):
        select_ensemble([case(good, A)], {"m": 5.0}, budget_s=1.0)
    with pytest.raises(InputError, match="shape"):
        select_ensemble([case({"m": np.zeros((2, 2, 2), np.float32)}, A)], {"m": 1.0}, 1.0)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        select_ensemble([case({"m": prob(A=1.5)}, A)], {"m": 1.0}, 1.0)
    with pytest.raises(InputError, match="expected"):
        select_ensemble([case(good, A, name="1"), case({"n": prob(A=0.9)}, A, name="2")], {"m": 1.0, "n": 1.0}, 1.0)
    with pytest.raises(InputError, match="metrics from"):
        weighted_objective({"accuracy": 1.0})


def per_class(tumour: float, pancreas: float, region) -> np.ndarray:
    """(background, tumour, pancreas) maps: certain background outside ``region``."""
    out = np.zeros((3, *SHAPE), np.float32)
    out[0] = 1.0
    out[(slice(None), *region)] = np.array([1.0 - tumour - pancreas, tumour, pancreas], np.float32)[:, None, None, None]
    return out


def test_per_class_maps_are_scored_by_argmax_like_the_engine():
    # 0.45 tumour beats 0.30 pancreas and 0.25 background: the engine writes tumour there, and so
    # must selection; a 0.5 threshold on the tumour map alone would call it empty.
    members = {"unsure": per_class(0.45, 0.30, A), "absent": per_class(0.05, 0.60, A)}
    cases = [ValidationCase("c", members, truth(A), SPACING, tumor_label=1)]
    result = select_ensemble(cases, {"unsure": 1.0, "absent": 1.0}, budget_s=10.0)
    assert result.weights == {"unsure": 1}
    assert result.aggregate.dice == 1.0
    assert cases[0].ensemble_mask({"unsure": 1}, threshold=0.5).sum() == truth(A).sum()


def test_per_class_maps_of_mismatched_shapes_are_refused():
    members = {"m1": per_class(0.9, 0.0, A), "m2": per_class(0.9, 0.0, A)[:2]}
    with pytest.raises(InputError, match="per-class maps"):
        select_ensemble(
            [ValidationCase("c", members, truth(A), SPACING, tumor_label=1)], {"m1": 1.0, "m2": 1.0}, budget_s=10.0
        )
