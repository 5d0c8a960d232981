"""Choose ensemble members on labelled validation cases: greedy forward selection with replacement.

Caruana, Niculescu-Mizil, Crew and Ksikes, "Ensemble selection from libraries of models",
ICML 2004. Starting from an empty ensemble, each step adds the one member (possibly one already
chosen: selection with replacement) that gives the best objective; after ``max_steps`` steps the
best ensemble seen along the way is returned. A member chosen k times has integer weight k.

The ensemble's probabilities for a case are the weighted mean of its members' maps. With per-class
maps (what ``pantherseg predict --member-outputs`` writes, ``ValidationCase.tumor_label`` set) a
voxel is tumour where the argmax of that mean is the tumour label, exactly as the engine decides;
with tumour-only maps, where the mean is > ``threshold`` (default 0.5). Each ensemble is scored
with the challenge figures (``pantherseg.evaluation.metrics``) against the truth, then compared with the
others by an objective.

Objectives are relative: they score a pool of aggregates against each other (lower is better).
- ``ranking_objective`` (default): the challenge's ranking score, the mean of the five per-metric
  positions within the pool.
- ``weighted_objective(weights)``: a weighted sum of the metrics, each normalised within the pool
  to [0, 1] (0 = best in the pool, 1 = worst; a metric equal across the pool counts 0).
At each step the pool is the candidate ensembles of that step; the final choice ranks every
ensemble on the path together and keeps the best (on a tie, the earliest: the smaller ensemble).

Time: ``costs_s[member]`` is that member's inference time in seconds per case. An ensemble costs
the sum over its distinct members (choosing a member again only changes its weight, not the
time). A member whose addition would take the ensemble over ``budget_s`` cannot be added.

Nothing here reads files; arrays are in one axis order (normally numpy (z, y, x)) and the spacing
is given in that same order, as in ``pantherseg.evaluation.metrics``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Mapping, Sequence

import numpy as np

from pantherseg.errors import InputError, ResourceError
from pantherseg.evaluation.metrics import (
    HIGHER_IS_BETTER,
    METRIC_NAMES,
    Aggregate,
    aggregate,
    case_metrics,
    leaderboard,
)

Objective = Callable[[Mapping[str, Aggregate]], Mapping[str, float]]
"""Scores a pool of named aggregates against each other; lower is better."""


@dataclass(frozen=True)
class ValidationCase:
    """One labelled validation case.

    ``probabilities`` maps each member's name to its probability map: per class, shape
    ``(classes, *truth.shape)``, when ``tumor_label`` is set (the mask is then the argmax of the
    ensemble's mean, as in the engine), else the tumour probability alone, shape ``truth.shape``
    (the mask is then the mean > threshold). ``truth`` is the boolean tumour mask; ``spacing_mm``
    the voxel size in mm along the arrays' axes (z, y, x for SimpleITK arrays).
    """

    name: str
    probabilities: Mapping[str, np.ndarray]
    truth: np.ndarray
    spacing_mm: tuple[float, float, float]
    tumor_label: int | None = None

    def ensemble_mask(self, weights: Mapping[str, int], threshold: float) -> np.ndarray:
        """The tumour mask of the weighted mean of the members' maps."""
        total = sum(weights.values())
        # A float32 scalar makes the product float32 without first copying each (float16) map.
        mean = sum(np.float32(w) * self.probabilities[m] for m, w in weights.items()) / np.float32(total)
        if self.tumor_label is None:
            return mean > threshold
        return mean.argmax(0) == self.tumor_label


@dataclass(frozen=True)
class Candidate:
    """An ensemble: integer weight per member (members with weight 0 left out), its time per case
    in seconds, its aggregate over the validation cases, and whether it fits the budget."""

    label: str
    weights: Mapping[str, int]
    cost_s: float
    aggregate: Aggregate
    within_budget: bool


@dataclass(frozen=True)
class ComparisonRow:
    """One line of the comparison table: a candidate and its objective score within the table."""

    candidate: Candidate
    score: float


@dataclass(frozen=True)
class SelectionResult:
    """What ``select_ensemble`` found.

    ``weights``: the chosen members and their integer weights. ``cost_s``: its time per case.
    ``path``: the ensemble after each step, in order. ``comparison``: the chosen ensemble, every
    single member and the all-members ensemble (equal weights, flagged if over budget), scored
    against each other with the same objective, best first.
    """

    weights: Mapping[str, int]
    cost_s: float
    aggregate: Aggregate
    path: list[Candidate]
    comparison: list[ComparisonRow]


def ranking_objective(pool: Mapping[str, Aggregate]) -> dict[str, float]:
    """The challenge ranking score of each aggregate within ``pool``: the mean of its five
    per-metric positions (ties share the best position). Lower is better."""
    return {entry.name: entry.score for entry in leaderboard(pool)}


def weighted_objective(weights: Mapping[str, float]) -> Objective:
    """An objective: sum of ``weights[metric]`` x the metric normalised within the pool to [0, 1]
    (0 = best value in the pool, 1 = worst). Metric names are ``metrics.METRIC_NAMES``
    (dice, surface_dice, hd95, masd, volume_rmse); metrics not named weigh 0. Lower is better."""
    unknown = set(weights) - set(METRIC_NAMES)
    if unknown:
        raise InputError(f"objective weights must name metrics from {list(METRIC_NAMES)}, found {sorted(unknown)}")
    bad = {m: w for m, w in weights.items() if not (math.isfinite(w) and w >= 0)}
    if bad or not any(w > 0 for w in weights.values()):
        raise InputError(
            f"objective weights must be non-negative numbers, at least one positive; found {dict(weights)}"
        )

    def objective(pool: Mapping[str, Aggregate]) -> dict[str, float]:
        scores = dict.fromkeys(pool, 0.0)
        for metric, weight in weights.items():
            values = {name: getattr(agg, metric) for name, agg in pool.items()}
            best = max(values.values()) if HIGHER_IS_BETTER[metric] else min(values.values())
            worst = min(values.values()) if HIGHER_IS_BETTER[metric] else max(values.values())
            if worst == best:
                continue
            for name, value in values.items():
                scores[name] += weight * (value - best) / (worst - best)
        return scores

    return objective


def _check_inputs(
    cases: Sequence[ValidationCase], costs_s: Mapping[str, float], budget_s: float, threshold: float, max_steps: int
) -> list[str]:
    if not cases:
        raise InputError("ensemble selection needs at least one validation case, got none")
    members = sorted(cases[0].probabilities)
    if not members:
        raise InputError(f"case {cases[0].name} has no member probability maps")
    for case in cases:
        if sorted(case.probabilities) != members:
            raise InputError(
                f"case {case.name} has probability maps for "
                f"{sorted(case.probabilities)}, expected {members} as in case "
                f"{cases[0].name}"
            )
        if not isinstance(case.truth, np.ndarray) or case.truth.dtype != bool:
            raise InputError(
                f"case {case.name}: truth must be a boolean mask, found "
                f"{getattr(case.truth, 'dtype', type(case.truth).__name__)}"
            )
        classes = {prob.shape[0] for prob in case.probabilities.values() if prob.ndim == case.truth.ndim + 1}
        for member, prob in case.probabilities.items():
            if case.tumor_label is None and prob.shape != case.truth.shape:
                raise InputError(
                    f"case {case.name}, member {member}: tumour probability map shape "
                    f"{prob.shape} does not match truth shape {case.truth.shape}"
                )
            if case.tumor_label is not None and (
                prob.shape[1:] != case.truth.shape or len(classes) != 1 or prob.shape[0] <= case.tumor_label
            ):
                raise InputError(
                    f"case {case.name}, member {member}: expected per-class maps of shape "
                    f"(classes > {case.tumor_label}, {', '.join(map(str, case.truth.shape))}) "
                    f"alike for every member, found {prob.shape}"
                )
            if not np.issubdtype(prob.dtype, np.floating):
                raise InputError(
                    f"case {case.name}, member {member}: expected a float probability map, found dtype {prob.dtype}"
                )
            low, high = float(np.min(prob)), float(np.max(prob))
            if not (0.0 <= low and high <= 1.0):
                raise InputError(
                    f"case {case.name}, member {member}: probabilities must lie in "
                    f"[0, 1], found values from {low} to {high}"
                )
    missing = [m for m in members if m not in costs_s]
    if missing:
        raise InputError(f"no cost (seconds per case) given for members {missing}")
    bad = {m: costs_s[m] for m in members if not (math.isfinite(costs_s[m]) and costs_s[m] >= 0)}
    if bad:
        raise InputError(f"member costs must be non-negative seconds per case, found {bad}")
    if not (math.isfinite(budget_s) and budget_s > 0):
        raise InputError(f"time budget must be a positive number of seconds, found {budget_s}")
    if not 0.0 <= threshold < 1.0:
        raise InputError(f"threshold must lie in [0, 1), found {threshold}")
    if max_steps < 1:
        raise InputError(f"max_steps must be at least 1, found {max_steps}")
    if min(costs_s[m] for m in members) > budget_s:
        cheapest = min(members, key=lambda m: costs_s[m])
        raise ResourceError(
            f"no member fits the time budget of {budget_s} s per case; the "
            f"cheapest, {cheapest}, takes {costs_s[cheapest]} s"
        )
    return members


class _Scorer:
    """Aggregates of weighted ensembles over the validation cases, cached by reduced weights."""

    def __init__(self, cases: Sequence[ValidationCase], threshold: float):
        self.cases = cases
        self.threshold = threshold
        self.cache: dict[tuple, Aggregate] = {}

    def __call__(self, weights: Mapping[str, int]) -> Aggregate:
        divisor = math.gcd(*weights.values())
        key = tuple(sorted((m, w // divisor) for m, w in weights.items()))
        if key not in self.cache:
            per_case = [
                case_metrics(case.ensemble_mask(dict(key), self.threshold), case.truth, case.spacing_mm)
                for case in self.cases
            ]
            self.cache[key] = aggregate(per_case)
        return self.cache[key]


def _label(weights: Mapping[str, int]) -> str:
    return " + ".join(f"{w}x {m}" if w > 1 else m for m, w in sorted(weights.items()))


def select_ensemble(
    cases: Sequence[ValidationCase],
    costs_s: Mapping[str, float],
    budget_s: float,
    *,
    objective: Objective = ranking_objective,
    max_steps: int = 10,
    threshold: float = 0.5,
) -> SelectionResult:
    """Greedy forward ensemble selection with replacement (Caruana et al. 2004).

    ``cases``: labelled validation cases, each with every member's probability maps (see ValidationCase).
    ``costs_s``: each member's inference time, seconds per case. ``budget_s``: the most time per
    case the ensemble may take (sum over its distinct members). ``objective``: how candidates are
    compared (``ranking_objective`` or ``weighted_objective(...)``). ``max_steps``: the number of
    additions tried (the chosen ensemble's weights sum to at most this). ``threshold``: ensemble
    probability above which a voxel is tumour.

    At each step every member that keeps the ensemble within budget is tried as the next
    addition; the candidates are scored against each other and the best is kept (ties: the
    cheapest ensemble, then member name order). Selection stops early when nothing can be added.
    The result is the best ensemble on the path (see the module docstring).

    Raises ``InputError`` for inconsistent inputs and ``ResourceError`` if no member fits the
    budget.
    """
    members = _check_inputs(cases, costs_s, budget_s, threshold, max_steps)
    score_of = _Scorer(cases, threshold)

    def cost(weights: Mapping[str, int]) -> float:
        return float(sum(costs_s[m] for m in weights))

    def candidate(weights: Mapping[str, int]) -> Candidate:
        c = cost(weights)
        return Candidate(_label(weights), dict(weights), c, score_of(weights), c <= budget_s)

    current: dict[str, int] = {}
    path: list[Candidate] = []
    for _ in range(max_steps):
        options = []
        for member in members:
            trial = dict(current)
            trial[member] = trial.get(member, 0) + 1
            if cost(trial) <= budget_s:
                options.append(candidate(trial))
        if not options:
            break
        pool = {str(i): option.aggregate for i, option in enumerate(options)}
        scores = objective(pool)
        best = min(range(len(options)), key=lambda i: (scores[str(i)], options[i].cost_s, i))
        current = dict(options[best].weights)
        path.append(options[best])

    path_scores = objective({str(i): c.aggregate for i, c in enumerate(path)})
    chosen = path[min(range(len(path)), key=lambda i: (path_scores[str(i)], i))]

    everyone = candidate(dict.fromkeys(members, 1))
    table = [
        replace(chosen, label=f"chosen: {chosen.label}"),
        *(candidate({m: 1}) for m in members),
        replace(everyone, label="all members"),
    ]
    table_scores = objective({str(i): c.aggregate for i, c in enumerate(table)})
    rows = sorted((ComparisonRow(c, table_scores[str(i)]) for i, c in enumerate(table)), key=lambda r: r.score)
    return SelectionResult(dict(chosen.weights), chosen.cost_s, chosen.aggregate, path, rows)


def format_comparison(result: SelectionResult) -> str:
    """The comparison table as plain text: one line per ensemble, best objective score first."""
    header = (
        f"{'ensemble':<40} {'s/case':>8} {'Dice':>7} {'SDice':>7} {'HD95':>7} {'MASD':>7} {'RMSE':>10} {'score':>6}"
    )
    lines = [header, "-" * len(header)]
    for row in result.comparison:
        c, a = row.candidate, row.candidate.aggregate
        flag = "" if c.within_budget else "  (over budget)"
        lines.append(
            f"{c.label:<40} {c.cost_s:>8.1f} {a.dice:>7.4f} {a.surface_dice:>7.4f} "
            f"{a.hd95:>7.2f} {a.masd:>7.2f} {a.volume_rmse:>10.1f} {row.score:>6.2f}"
            f"{flag}"
        )
    return "\n".join(lines)
