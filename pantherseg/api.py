"""The one function behind every entry point: ``segment``.

``inference.py`` (grand-challenge) and ``pantherseg predict`` (local folders) both turn their
arguments into one call of :func:`segment`, which loads and validates the ensemble once and then
writes one mask per input image.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from pantherseg.config import EnsembleConfig, load_config
from pantherseg.engine.deadline import Deadline
from pantherseg.engine.ensemble import Ensemble, ProgressListener, outcomes_as_dicts
from pantherseg.errors import InputError, PantherError
from pantherseg.io.images import (check_writable, image_stem, is_image_file, mask_image, read_volume,
                                  write_image_atomically)
from pantherseg.io.outputs import check_output_formats, write_outputs
from pantherseg.io.report import build_report, write_report
from pantherseg.io.tumour_stats import tumour_statistics
from pantherseg.options import RunOptions
from pantherseg.paths import default_config, default_weights
from pantherseg.run_state import mark_completed

log = logging.getLogger(__name__)

__all__ = ["segment", "segment_case", "Ensemble", "CaseResult", "RunOptions", "collect_inputs"]


@dataclass
class CaseResult:
    input: Path
    output: Path | None
    report: dict | None
    report_path: Path | None = None
    preview_path: Path | None = None
    error: str | None = None


def collect_inputs(inputs: Path | str | Sequence[Path | str]) -> list[Path]:
    """A file, a folder of image files, or a list of files -> image paths, sorted, stems unique.

    A folder holding no image files but DICOM files is one case: the folder itself (pantherseg.dicom).
    """
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    paths: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if is_image_file(p))
            if not found and _is_dicom_folder(item):
                found = [item]
            if not found:
                raise InputError(f"No images in {item}: expected .mha, .nii.gz, .nii, .mhd or .nrrd files, "
                                 f"or DICOM files of one series.")
            paths.extend(found)
        elif item.is_file():
            paths.append(item)
        else:
            raise InputError(f"Input not found: {item} is neither an image file nor a folder.")
    stems = [image_stem(p) for p in paths]
    clashes = sorted({s for s in stems if stems.count(s) > 1})
    if clashes:
        raise InputError(f"Several inputs would write the same mask name {clashes}; rename them.")
    return paths


def segment(
    inputs: Path | str | Sequence[Path | str],
    *,
    output_dir: Path | str,
    options: RunOptions | None = None,
    progress: ProgressListener | None = None,
    clock=time.monotonic,
    **fields,
) -> list[CaseResult]:
    """Segment the tumour in each input image and write ``<output_dir>/<image stem>.mha``.

    Args:
        inputs: an image file, a folder of images, or a list of image files.
        output_dir: where the uint8 {0,1} masks go, one per input, with the input's geometry.
        options: how to segment (:class:`pantherseg.options.RunOptions`: task, config, weights, device,
            time budget, precision, backend, output formats, where reports and previews go, ...).
        progress: progress listener (see pantherseg.progress).
        clock: monotonic clock in seconds (injectable for tests).
        **fields: RunOptions fields as keywords, over ``options``: ``segment(path, output_dir=out,
            task="t2", device="cpu")``.

    Output folders are probed (created, written, enough free space) before any model is loaded. A case
    that fails after its mask was written leaves neither mask nor report: both exist, or neither.

    Every model is validated before the first image is read; errors are PantherError subclasses.
    """
    called_at = clock()
    options = (options or RunOptions()).but(**fields)
    paths = collect_inputs(inputs)
    options = options.but(output_formats=check_output_formats(options.output_formats, paths))  # before loading
    if options.report_name is not None and len(paths) != 1:
        raise InputError(f"report_name names one report, but there are {len(paths)} inputs.")
    check_writable([output_dir, options.report_dir, options.member_outputs_dir, options.preview_dir],
                   [Path(output_dir) / f"{image_stem(p)}.mha" for p in paths])
    output_dir = Path(output_dir)
    config = options.config
    config = config if isinstance(config, EnsembleConfig) else load_config(config or default_config())
    weights = Path(options.weights) if options.weights is not None else default_weights()
    ensemble = Ensemble.load(config=config, task=options.task, weights=weights, device=options.device,
                             tile_batch_size=options.tile_batch_size, precision=options.precision,
                             backend=options.backend)
    ensemble.keep_networks = len(paths) > 1
    budget = config.time_budget_s if options.time_budget_s is None else options.time_budget_s

    results = []
    for index, path in enumerate(paths):
        # The first case's budget includes loading the models (and, for the entry points, the interpreter's
        # start: grand-challenge counts from container start); later cases start their own.
        if index > 0:
            started_at = clock()
        else:
            started_at = None if options.budget_from_process_start else called_at  # None: from process start
        deadline = Deadline(budget_s=budget, reserve_s=min(config.export_reserve_s, budget / 2), clock=clock,
                            started_at=started_at)
        try:
            results.append(_segment_one(ensemble, path, output_dir, options=options, deadline=deadline,
                                        progress=progress, weights=weights, config=config))
        except PantherError as error:
            if options.stop_on_error:
                raise
            log.error("%s: %s", path.name, error)
            results.append(CaseResult(input=path, output=None, report=None, error=str(error)))
    return results


def segment_case(ensemble: Ensemble, path: Path | str, *, output_dir: Path | str, name: str | None = None,
                 weights: Path | str, config: EnsembleConfig, time_budget_s: float | None = None,
                 report_dir: Path | str | None = None, run_hash: str | None = None,
                 progress: ProgressListener | None = None, clock=time.monotonic,
                 options: RunOptions | None = None) -> CaseResult:
    """One case on an already loaded ensemble (what each cohort worker calls, case after case).

    ``name``: the mask's file name without ``.mha`` (default: the image's stem); the report is
    ``<report_dir>/<name>.report.json`` and carries ``run_hash``. The case gets its own time budget
    (``time_budget_s``, default the config's) from now. ``options``: output formats, series and ROI name
    (the DICOM node's); its ``report_dir`` is replaced by ``report_dir``. Raises PantherError for a bad case.
    """
    budget = config.time_budget_s if time_budget_s is None else time_budget_s
    deadline = Deadline(budget_s=budget, reserve_s=min(config.export_reserve_s, budget / 2), clock=clock,
                        started_at=clock())
    options = (options or RunOptions()).but(report_dir=report_dir)
    return _segment_one(ensemble, Path(path), Path(output_dir), options=options,
                        deadline=deadline, progress=progress, weights=Path(weights), config=config, name=name,
                        run_hash=run_hash)


def _segment_one(ensemble: Ensemble, path: Path, output_dir: Path, *, options: RunOptions, deadline: Deadline,
                 progress, weights: Path, config: EnsembleConfig, name: str | None = None,
                 run_hash: str | None = None) -> CaseResult:
    stem = name or image_stem(path)
    started = time.perf_counter()
    dicom_series = None
    if path.is_dir():  # collect_inputs gives folders only when they hold DICOM files
        from pantherseg.dicom.series import check_dicom_sources, read_series

        dicom_series = read_series(path, series_uid=options.series_uid)
        check_dicom_sources(dicom_series, options.output_formats, roi_name=options.roi_name)  # before predicting
        volume = dicom_series.volume
    else:
        volume = read_volume(path)
    read_s = time.perf_counter() - started
    output_path = output_dir / f"{stem}.mha"
    if output_path.resolve() == path.resolve():
        raise InputError(f"The mask would overwrite its input {path}; choose another output folder.")

    from pantherseg.engine.memory_estimate import check_prediction_fits

    check_prediction_fits(volume, ensemble)  # before the engine allocates anything big
    prediction = ensemble.predict(volume, deadline=deadline, progress=progress,
                                  keep_member_probabilities=options.member_outputs_dir is not None)
    quality = _assess_quality(ensemble, prediction, volume, config)

    started = time.perf_counter()
    written, output_notes = write_outputs(
        options.output_formats, prediction.mask, volume.sitk_image, output_path.parent,
        output_path.name[: -len(".mha")], dicom_series=dicom_series,
        algorithm=None if dicom_series is None else _algorithm(ensemble, prediction, quality),
        roi_name=options.roi_name, uncertainty=lambda: _uncertainty_map(prediction))
    extras: list[Path] = []  # member outputs, named here before each is written
    try:  # from here on a failure (or SIGTERM) removes the outputs: mask and report exist together or not at all
        result = _finish_case(ensemble, path, volume, prediction, written, output_notes, started, read_s, stem,
                              options=options, weights=weights, config=config, run_hash=run_hash, extras=extras,
                              quality=quality)
    except BaseException:
        for leftover in [*written, *extras]:
            Path(leftover).unlink(missing_ok=True)
        raise
    mark_completed(written)
    if options.preview_dir is not None:
        from pantherseg.io.preview import write_preview

        try:
            result.preview_path = write_preview(volume, prediction.mask,
                                                Path(options.preview_dir) / f"{stem}.preview.png")
        except (OSError, ImportError, RuntimeError) as error:
            # The mask is written and correct; a missing picture must not fail the case.
            log.warning("%s: preview not written: %s", path.name, error)
    return result


def _finish_case(ensemble, path, volume, prediction, written, output_notes, started, read_s, stem, *,
                 options: RunOptions, weights, config, run_hash, extras: list[Path], quality: dict) -> CaseResult:
    """Member outputs (their paths added to ``extras``) and the report, once the mask is written."""
    output_path = written[0]
    prediction.notes.extend(output_notes)
    write_s = time.perf_counter() - started
    if options.member_outputs_dir is not None:
        _write_member_probabilities(prediction, volume, Path(options.member_outputs_dir), stem, ensemble, extras)

    timings = {"load": ensemble.load_s, "read": read_s, **prediction.timings_s, "write": write_s}
    voxel_volume = float(np.prod(volume.spacing_zyx))
    tumor_voxels = int(prediction.mask.sum())
    report = build_report(
        task=ensemble.task.name, input_path=str(path), output_path=str(output_path),
        device=f"{ensemble.device} ({ensemble.backend}, {ensemble.autocast_dtype or 'float32'})",
        geometry=volume.geometry(), outcomes=outcomes_as_dicts(prediction.outcomes), timings_s=timings,
        tumor_statistics=tumour_statistics(prediction.mask, volume.sitk_image), output_paths=[str(p) for p in written],
        notes=prediction.notes, weights=str(weights), config=str(config.source or "<in memory>"),
        tumor_voxels=tumor_voxels, tumor_volume_mm3=tumor_voxels * voxel_volume, run_hash=run_hash,
        quality=quality,
    )
    log.info("%s -> %s: %d tumour voxels (%.1f ml); members used %s", path.name, output_path, tumor_voxels,
             tumor_voxels * voxel_volume / 1000, report["members_used"])
    log.info("time per stage (s): %s", ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    _log_quality(path.name, quality)
    result = CaseResult(input=path, output=output_path, report=report)
    if options.report_dir is not None:
        name = options.report_name or f"{stem}.report.json"
        result.report_path = write_report(report, Path(options.report_dir) / name)
    return result


def _is_dicom_folder(folder: Path) -> bool:
    from pantherseg.dicom import is_dicom_folder  # standard library only: no pydicom import here

    return is_dicom_folder(folder)


def _algorithm(ensemble: Ensemble, prediction, quality: dict | None = None):
    """What the DICOM outputs name as their algorithm: the members that contributed to this mask."""
    from pantherseg.dicom.seg import Algorithm

    return Algorithm(task=ensemble.task.name,
                     members=tuple(prediction.members_used()),
                     quality_score=None if quality is None else quality["score"],
                     quality_review=None if quality is None else quality["review"])


def _assess_quality(ensemble: Ensemble, prediction, volume, config: EnsembleConfig) -> dict:
    """The case's quality block (pantherseg.engine.quality); the members' masks are released after it."""
    from pantherseg.engine.quality import assess_prediction

    quality = assess_prediction(prediction, members=ensemble.members, image_zyx=volume.data[0],
                                spacing_zyx=volume.spacing_zyx, review_below=config.quality_review_below)
    prediction.member_tumour_masks.clear()
    return quality


def _uncertainty_map(prediction):
    """The ``uncertainty`` output: per-voxel normalised entropy of the mean (zeros if no member ran)."""
    from pantherseg.engine.quality import normalised_entropy

    if prediction.probabilities is None:
        return np.zeros(prediction.mask.shape, dtype=np.float32)
    return normalised_entropy(prediction.probabilities)


def _log_quality(name: str, quality: dict) -> None:
    """The case's last log line: its quality score, and why to review it if so."""
    if quality["review"]:
        log.warning("%s: quality score %.2f: REVIEW: %s", name, quality["score"], "; ".join(quality["reasons"]))
    else:
        log.info("%s: quality score %.2f (review below %.2f): no review flag", name, quality["score"],
                 quality["review_below"])


def _write_member_probabilities(prediction, volume, folder: Path, stem: str, ensemble: Ensemble,
                                written: list[Path]) -> None:
    """Each member's probabilities (float32, a vector component per class) and its own mask (argmax);
    each path is added to ``written`` before its file is written, so a failed case can remove them all.

    All classes, not the tumour's alone: the ensemble's mask is the argmax of the mean, which the
    tumour probability alone cannot reproduce (0.45 tumour beats 0.30 pancreas and 0.25 background).
    """
    import SimpleITK as sitk

    tumor = ensemble.task.tumor_label
    for name, probabilities in prediction.member_probabilities.items():
        image = sitk.GetImageFromArray(np.ascontiguousarray(np.moveaxis(probabilities, 0, -1), dtype=np.float32),
                                       isVector=True)
        image.CopyInformation(volume.sitk_image)
        probabilities_path, mask_path = folder / name / f"{stem}.mha", folder / name / "masks" / f"{stem}.mha"
        written.extend([probabilities_path, mask_path])
        write_image_atomically(image, probabilities_path)
        own_mask = (probabilities.argmax(0) == tumor).astype(np.uint8)
        write_image_atomically(mask_image(own_mask, volume.sitk_image), mask_path)
