"""Per-case quality control from the ensemble itself: should a reader check this mask?

Everything here is computed from what the engine holds anyway (no second pass of the networks):
each member's own tumour mask (a bool array per member: its argmax == the tumour label), the
ensemble's mean probabilities, the ensemble's mask and the input image. numpy only. The measures,
the score and the review rule are defined in docs/quality.md; in short:

- ``mean_pairwise_dice``: mean Dice over every pair of members' tumour masks (a pair of empty
  masks agrees: 1); ``volume_cv``: coefficient of variation of the members' tumour volumes (ml);
- ``majority_disagreement``: the fraction of voxels, of those that the members' majority or the
  ensemble's argmax calls tumour, where the two differ;
- ``entropy_inside`` / ``entropy_boundary``: the ensemble's mean normalised entropy (0 sure, 1 all
  classes equal) inside its tumour and on the tumour's one-voxel boundary shell;
- ``noise_ratio``: the input's robust noise level over its foreground signal (the voxels the
  ensemble calls pancreas or tumour); ``outside_training_range``: for fixed-unit (CT-normalised)
  plans, the fraction of those voxels outside the plans' 0.5-99.5 % foreground percentiles.

Arrays are numpy (z, y, x) in image space; probabilities are (classes, z, y, x).
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from pantherseg.config import DEFAULT_QUALITY_REVIEW_BELOW

DEFAULT_REVIEW_BELOW = DEFAULT_QUALITY_REVIEW_BELOW  # the config's default (pantherseg.config)
# Noise over foreground signal: at or below NOISE_OK the input factor is 1, at NOISE_MAX it is 0. The
# phantoms the demo models saw have 0.04-0.06; clinical abdominal MRI is usually under 0.1.
NOISE_OK, NOISE_MAX = 0.15, 0.5
# A component under this level is named as a reason when the case is flagged.
REASON_LEVEL = 0.8
# Schemes whose intensities are in fixed units, so the plans' raw foreground statistics apply.
FIXED_UNIT_SCHEMES = ("CTNormalization",)


def tumour_mask(probabilities: np.ndarray, tumor_label: int) -> np.ndarray:
    """A member's own tumour mask, (z, y, x) bool: its argmax is the tumour label."""
    return probabilities.argmax(0) == tumor_label


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two bool masks; two empty masks agree (1.0)."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def mean_pairwise_dice(masks: list[np.ndarray]) -> float | None:
    """Mean Dice over all pairs of masks; None for fewer than two masks (agreement undefined)."""
    pairs = [dice(a, b) for a, b in combinations(masks, 2)]
    return float(np.mean(pairs)) if pairs else None


def volume_spread(masks: list[np.ndarray], voxel_ml: float) -> dict:
    """The members' tumour volumes (ml) and their coefficient of variation (std / mean; 0 if all are 0)."""
    volumes = np.array([int(m.sum()) * voxel_ml for m in masks], dtype=float)
    cv = None  # undefined for fewer than two members
    if len(volumes) > 1:
        cv = float(volumes.std() / volumes.mean()) if volumes.mean() > 0 else 0.0
    return {"member_volumes_ml": [round(float(v), 3) for v in volumes], "volume_cv": cv}


def majority_disagreement(masks: list[np.ndarray], ensemble_mask: np.ndarray) -> float | None:
    """|majority XOR ensemble| / |majority OR ensemble|; majority = more than half the members; 0 if both empty."""
    if not masks:
        return None
    votes = np.zeros(ensemble_mask.shape, dtype=np.uint8)
    for mask in masks:
        votes += mask
    majority = votes * 2 > len(masks)
    ensemble = ensemble_mask.astype(bool)
    union = int(np.logical_or(majority, ensemble).sum())
    return 0.0 if union == 0 else int(np.logical_xor(majority, ensemble).sum()) / union


def normalised_entropy(probabilities: np.ndarray) -> np.ndarray:
    """Per-voxel entropy of the class probabilities over log(classes): float32 in [0, 1], (z, y, x).

    Computed slab by slab along z, so the temporaries stay a few slices big."""
    classes = probabilities.shape[0]
    out = np.zeros(probabilities.shape[1:], dtype=np.float32)
    if classes < 2:
        return out
    scale = np.float32(1.0 / np.log(classes))
    for start in range(0, out.shape[0], 16):
        slab = np.clip(probabilities[:, start : start + 16].astype(np.float32), 0.0, 1.0)
        logs = np.log(slab, where=slab > 0, out=np.zeros_like(slab))  # 0 log 0 = 0
        out[start : start + 16] = np.clip(-(slab * logs).sum(0) * scale, 0.0, 1.0)
    return out


def boundary_shell(mask: np.ndarray) -> np.ndarray:
    """Voxels within one face-neighbour step of the mask's surface, inside or out (dilation XOR erosion)."""
    mask = mask.astype(bool)
    dilated, eroded = mask.copy(), mask.copy()
    for axis in range(mask.ndim):
        for shift in (1, -1):
            moved = np.roll(mask, shift, axis=axis)
            edge = [slice(None)] * mask.ndim
            edge[axis] = 0 if shift == 1 else -1
            moved[tuple(edge)] = False  # np.roll wraps around; nothing comes in from outside the image
            dilated |= moved
            inward = np.roll(mask, shift, axis=axis)
            inward[tuple(edge)] = False
            eroded &= inward
    return dilated & ~eroded


def entropy_measures(probabilities: np.ndarray, ensemble_mask: np.ndarray) -> dict:
    """Mean normalised entropy inside the ensemble's tumour and on its boundary shell (None if no tumour).

    Only the tumour's bounding box (plus one voxel) is looked at."""
    mask = ensemble_mask.astype(bool)
    if not mask.any():
        return {"entropy_inside": None, "entropy_boundary": None}
    box = _bounding_box(mask, margin=1)
    entropy = normalised_entropy(probabilities[(slice(None), *box)])
    inside = mask[box]
    shell = boundary_shell(inside)
    return {"entropy_inside": float(entropy[inside].mean()), "entropy_boundary": float(entropy[shell].mean())}


def input_measures(
    image_zyx: np.ndarray,
    foreground: np.ndarray,
    *,
    normalisation: str | None = None,
    intensity_properties: dict | None = None,
) -> dict:
    """How far the input is from what the models saw, from the voxels the ensemble calls foreground.

    ``noise_ratio``: robust noise sigma (median absolute deviation of neighbour differences along x,
    over sqrt(2)) over the median foreground intensity; None without foreground.
    ``outside_training_range``: for fixed-unit schemes (CT), the fraction of foreground voxels outside
    the plans' [percentile_00_5, percentile_99_5]; None for MRI schemes (arbitrary units: the plans'
    raw statistics pool scanners of different scales)."""
    foreground = foreground.astype(bool)
    result = {"foreground_voxels": int(foreground.sum()), "noise_ratio": None, "outside_training_range": None}
    if result["foreground_voxels"] < 2:
        return result
    box = _bounding_box(foreground, margin=0)
    image, inside = image_zyx[box].astype(np.float32), foreground[box]
    signal = float(np.median(image[inside]))
    both = inside[:, :, 1:] & inside[:, :, :-1]
    differences = (image[:, :, 1:] - image[:, :, :-1])[both]
    if signal > 0 and differences.size:
        mad = float(np.median(np.abs(differences - np.median(differences))))
        result["noise_ratio"] = 1.4826 * mad / np.sqrt(2.0) / signal
    if normalisation in FIXED_UNIT_SCHEMES and intensity_properties:
        low, high = intensity_properties.get("percentile_00_5"), intensity_properties.get("percentile_99_5")
        if low is not None and high is not None:
            values = image[inside]
            result["outside_training_range"] = float(np.mean((values < low) | (values > high)))
    return result


def components(measures: dict) -> dict[str, float]:
    """The score's factors, each in [0, 1] (1 = no doubt); an undefined measure gives no factor."""
    parts = {}
    if measures.get("mean_pairwise_dice") is not None:
        parts["agreement"] = measures["mean_pairwise_dice"]
    if measures.get("volume_cv") is not None:
        parts["volume"] = 1.0 - min(1.0, measures["volume_cv"])
    if measures.get("majority_disagreement") is not None:
        parts["majority"] = 1.0 - measures["majority_disagreement"]
    entropies = [measures[k] for k in ("entropy_inside", "entropy_boundary") if measures.get(k) is not None]
    if entropies:
        parts["confidence"] = 1.0 - float(np.mean(entropies))
    if measures.get("noise_ratio") is not None:
        parts["input"] = float(np.clip((NOISE_MAX - measures["noise_ratio"]) / (NOISE_MAX - NOISE_OK), 0.0, 1.0))
    if measures.get("outside_training_range") is not None:
        parts["input_range"] = float(np.clip(1.0 - 5.0 * max(0.0, measures["outside_training_range"] - 0.01), 0, 1))
    return parts


def score(measures: dict) -> float:
    """s = mean(agreement factors) x confidence x input factors; 1 = full agreement. docs/quality.md."""
    parts = components(measures)
    agreement = [parts[k] for k in ("agreement", "volume", "majority") if k in parts]
    s = float(np.mean(agreement)) if agreement else 1.0
    for key in ("confidence", "input", "input_range"):
        s *= parts.get(key, 1.0)
    return float(np.clip(s, 0.0, 1.0))


_REASONS = {
    "agreement": "members disagree on the tumour (mean pairwise Dice {mean_pairwise_dice:.2f})",
    "volume": "members' tumour volumes spread (coefficient of variation {volume_cv:.2f})",
    "majority": "members' majority and the ensemble differ on {majority_disagreement:.0%} of the tumour",
    "confidence": "ensemble uncertain (normalised entropy inside {entropy_inside}, boundary {entropy_boundary})",
    "input": "input noisier than the training images (noise/signal {noise_ratio:.2f}, expected <= %.2f)" % NOISE_OK,
    "input_range": "{outside_training_range:.0%} of foreground intensities outside the training range",
}


def assess(
    member_masks: dict[str, np.ndarray],
    probabilities: np.ndarray | None,
    ensemble_mask: np.ndarray,
    image_zyx: np.ndarray,
    *,
    spacing_zyx,
    members_total: int,
    review_below: float = DEFAULT_REVIEW_BELOW,
    normalisation: str | None = None,
    intensity_properties: dict | None = None,
    skipped: dict[str, str] | None = None,
) -> dict:
    """The run report's ``quality`` block: score, review flag, reasons and every measure.

    ``member_masks``: the tumour mask of each member whose map is in the mean; ``skipped``: the others,
    name -> reason (deadline, constant image)."""
    skipped = skipped or {}
    masks = list(member_masks.values())
    voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    measures: dict = {
        "members_used": len(masks),
        "members_total": members_total,
        "mean_pairwise_dice": mean_pairwise_dice(masks),
        **volume_spread(masks, voxel_ml),
        "majority_disagreement": majority_disagreement(masks, ensemble_mask),
    }
    if probabilities is None:
        measures.update(
            {
                "entropy_inside": None,
                "entropy_boundary": None,
                "foreground_voxels": 0,
                "noise_ratio": None,
                "outside_training_range": None,
            }
        )
    else:
        measures.update(entropy_measures(probabilities, ensemble_mask))
        measures.update(
            input_measures(
                image_zyx,
                probabilities[0] < 0.5,
                normalisation=normalisation,
                intensity_properties=intensity_properties,
            )
        )
    s = 0.0 if not masks else score(measures)
    reasons = []
    if len(masks) < 2:
        reasons.append(f"only {len(masks)} of {members_total} member(s) gave a map: member agreement undefined")
    if s < review_below:
        reasons.append(f"score {s:.2f} below the review threshold {review_below:.2f}")
        parts = components(measures)
        reasons.extend(_REASONS[k].format(**_shown(measures)) for k in _REASONS if parts.get(k, 1.0) < REASON_LEVEL)
    if masks and measures["foreground_voxels"] == 0:
        reasons.append("the ensemble found neither pancreas nor tumour: wrong sequence or field of view?")
    quality = {"score": round(s, 4), "review": bool(reasons), "reasons": reasons, "review_below": review_below}
    if skipped:
        quality["weakened_by"] = (
            f"{len(skipped)} of {members_total} member(s) did not contribute "
            f"({'; '.join(f'{n}: {r}' for n, r in skipped.items())}): agreement is measured "
            f"on {len(masks)} member(s), so it is less sure than with all"
        )
    quality["measures"] = {k: _rounded(v) for k, v in measures.items()}
    return quality


def _shown(measures: dict) -> dict:
    return {k: (f"{v:.2f}" if k.startswith("entropy") and v is not None else v) for k, v in measures.items()}


def _rounded(value):
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _bounding_box(mask: np.ndarray, *, margin: int) -> tuple[slice, ...]:
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        box.append(slice(max(0, int(hits[0]) - margin), min(mask.shape[axis], int(hits[-1]) + margin + 1)))
    return tuple(box)


def assess_prediction(
    prediction, *, members, image_zyx: np.ndarray, spacing_zyx, review_below: float = DEFAULT_REVIEW_BELOW
) -> dict:
    """``assess`` on an engine Prediction: its members' masks, mean probabilities and outcomes."""
    used = {o.name for o in prediction.outcomes if o.name in prediction.member_tumour_masks}
    skipped = {o.name: o.reason or o.status for o in prediction.outcomes if o.name not in used}
    first = next((m for m in members if m.name in used), members[0] if members else None)
    normalisation = properties = None
    if first is not None:
        normalisation = list(first.configuration_manager.normalization_schemes)[0]
        properties = first.plans_manager.foreground_intensity_properties_per_channel.get("0")
    return assess(
        prediction.member_tumour_masks,
        prediction.probabilities,
        prediction.mask,
        image_zyx,
        spacing_zyx=spacing_zyx,
        members_total=len(prediction.outcomes),
        review_below=review_below,
        normalisation=normalisation,
        intensity_properties=properties,
        skipped=skipped,
    )
