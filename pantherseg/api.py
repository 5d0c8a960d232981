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
from pantherseg.engine.ensemble import Ensemble, Prediction, ProgressListener
from pantherseg.engine.stage_timer import StageTimer
from pantherseg.errors import InputError, PantherError
from pantherseg.io.images import (
    Volume,
    check_writable,
    image_stem,
    is_image_file,
    mask_image,
    read_volume,
    write_image_atomically,
)
from pantherseg.io.outputs import WrittenFiles, check_output_formats, output_paths, outputs_all_or_none, write_outputs
from pantherseg.io.tumour_stats import tumour_statistics
from pantherseg.options import RunOptions
from pantherseg.paths import default_config, default_weights
from pantherseg.run_report import OutputRecord, RunReport
from pantherseg.run_state import mark_completed

log = logging.getLogger(__name__)

__all__ = [
    "segment",
    "segment_case",
    "load_ensemble",
    "Ensemble",
    "CaseResult",
    "RunOptions",
    "RunReport",
    "collect_inputs",
]


@dataclass
class CaseResult:
    """One case's outcome: its mask (the first output) and report, or the one-line ``error``."""

    input: Path
    output: Path | None
    report: RunReport | None
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
                raise InputError(
                    f"No images in {item}: expected .mha, .nii.gz, .nii, .mhd or .nrrd files, "
                    f"or DICOM files of one series."
                )
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
    check_writable(
        [output_dir, options.report_dir, options.member_outputs_dir, options.preview_dir],
        [path for p in paths for path in output_paths(Path(output_dir), image_stem(p), options.output_formats)],
    )
    ensemble = load_ensemble(options, keep_networks=len(paths) > 1)
    results = []
    for index, path in enumerate(paths):
        # The first case's budget includes loading the models (and, for the entry points, the interpreter's
        # start: grand-challenge counts from container start); later cases start their own.
        if index > 0:
            started_at = clock()
        else:
            started_at = None if options.budget_from_process_start else called_at  # None: from process start
        deadline = _deadline(ensemble, options, started_at=started_at, clock=clock)
        try:
            results.append(
                _segment_one(ensemble, path, Path(output_dir), options=options, deadline=deadline, progress=progress)
            )
        except PantherError as error:
            if options.stop_on_error:
                raise
            log.error("%s: %s", path.name, error)
            results.append(CaseResult(input=path, output=None, report=None, error=str(error)))
    return results


def load_ensemble(options: RunOptions, *, keep_networks: bool = True) -> Ensemble:
    """The ensemble ``options`` name (task, config, weights, engine options), validated and loaded.

    ``keep_networks``: keep each member's network for the next case (a worker, a server); False frees
    each once its member ran (one case: only one member's weights in memory at a time)."""
    config = options.config
    config = config if isinstance(config, EnsembleConfig) else load_config(config or default_config())
    weights = Path(options.weights) if options.weights is not None else default_weights()
    return Ensemble.load(
        config=config, task=options.task, weights=weights, engine=options.engine_options(), keep_networks=keep_networks
    )


def segment_case(
    ensemble: Ensemble,
    path: Path | str,
    *,
    output_dir: Path | str,
    options: RunOptions | None = None,
    name: str | None = None,
    run_hash: str | None = None,
    progress: ProgressListener | None = None,
    clock=time.monotonic,
) -> CaseResult:
    """One case on an already loaded ensemble (what a cohort worker or a DICOM node calls, case after case).

    ``options``: the run's options (output formats, report, member outputs and preview folders, the time
    budget; their task, config, weights and engine fields were the ensemble's to use). ``name``: the outputs'
    file name stem (default: the image's stem). ``run_hash`` goes into the report. The case gets its own time
    budget from now. Output formats are checked here, as :func:`segment` does before loading. Raises
    PantherError for a bad case.
    """
    options = options or RunOptions()
    path = Path(path)
    options = options.but(output_formats=check_output_formats(options.output_formats, [path]))
    deadline = _deadline(ensemble, options, started_at=clock(), clock=clock)
    return _segment_one(
        ensemble,
        path,
        Path(output_dir),
        options=options,
        deadline=deadline,
        progress=progress,
        name=name,
        run_hash=run_hash,
    )


def _deadline(ensemble: Ensemble, options: RunOptions, *, started_at: float | None, clock) -> Deadline:
    """The case's time budget (the options', else the config's) from ``started_at`` (None: process start)."""
    budget = ensemble.config.time_budget_s if options.time_budget_s is None else options.time_budget_s
    return Deadline(
        budget_s=budget, reserve_s=min(ensemble.config.export_reserve_s, budget / 2), clock=clock, started_at=started_at
    )


@dataclass
class _Source:
    """A case's input: the image as the engine reads it, and its DICOM series when it is one."""

    volume: Volume
    dicom_series: object | None = None


def _read_source(path: Path, options: RunOptions) -> _Source:
    if not path.is_dir():
        return _Source(read_volume(path))
    from pantherseg.dicom.series import check_dicom_sources, read_series  # folders: DICOM files only

    series = read_series(path, series_uid=options.series_uid)
    check_dicom_sources(series, options.output_formats, roi_name=options.roi_name)  # before predicting
    return _Source(series.volume, series)


def _segment_one(
    ensemble: Ensemble,
    path: Path,
    output_dir: Path,
    *,
    options: RunOptions,
    deadline: Deadline,
    progress,
    name: str | None = None,
    run_hash: str | None = None,
) -> CaseResult:
    stem = name or image_stem(path)
    timer = StageTimer()
    with timer.stage("read"):
        source = _read_source(path, options)
    if any(target.resolve() == path.resolve() for target in output_paths(output_dir, stem, options.output_formats)):
        raise InputError(f"An output would overwrite its input {path}; choose another output folder.")

    from pantherseg.engine.memory_estimate import check_prediction_fits

    volume = source.volume
    check_prediction_fits(volume, ensemble)  # before the engine allocates anything big
    prediction = ensemble.predict(
        volume, deadline=deadline, progress=progress, keep_member_probabilities=options.member_outputs_dir is not None
    )
    quality = _assess_quality(ensemble, prediction, volume)

    # From here on a failure (or SIGTERM) removes the case's files: mask and report exist together or not at all.
    with outputs_all_or_none() as written:
        with timer.stage("write"):
            outputs, notes = write_outputs(
                options.output_formats,
                prediction.mask,
                volume.sitk_image,
                output_dir,
                stem,
                written=written,
                dicom_series=source.dicom_series,
                algorithm=None if source.dicom_series is None else _algorithm(ensemble, prediction, quality),
                roi_name=options.roi_name,
                voxel_mm3=volume.voxel_mm3,
                uncertainty=lambda: _uncertainty_map(prediction),
            )
        prediction.notes.extend(notes)
        if options.member_outputs_dir is not None:
            _write_member_probabilities(prediction, volume, Path(options.member_outputs_dir), stem, ensemble, written)
        report = _run_report(
            ensemble,
            path,
            volume,
            prediction,
            outputs,
            quality,
            run_hash,
            timings={
                "load": ensemble.load_s,
                "read": timer.seconds["read"],
                **prediction.timings_s,
                "write": timer.seconds["write"],
            },
        )
        result = CaseResult(input=path, output=outputs[0], report=report)
        if options.report_dir is not None:
            result.report_path = report.write(
                written.add(Path(options.report_dir) / (options.report_name or f"{stem}.report.json"))
            )
    mark_completed(outputs)
    _log_case(path.name, report, quality)
    if options.preview_dir is not None:
        result.preview_path = _write_preview(
            volume, prediction, Path(options.preview_dir) / f"{stem}.preview.png", path.name
        )
    return result


def _run_report(
    ensemble: Ensemble,
    path: Path,
    volume: Volume,
    prediction: Prediction,
    outputs: list[Path],
    quality: dict,
    run_hash: str | None,
    *,
    timings: dict[str, float],
) -> RunReport:
    tumor_voxels = int(prediction.mask.sum())
    return RunReport(
        task=ensemble.task.name,
        input={"path": str(path), **volume.geometry()},
        output=OutputRecord(
            path=str(outputs[0]),
            paths=tuple(str(p) for p in outputs),
            tumor_voxels=tumor_voxels,
            tumor_volume_mm3=tumor_voxels * volume.voxel_mm3,
            tumor_statistics=tumour_statistics(prediction.mask, volume.sitk_image),
        ),
        device=ensemble.describe_device(),
        weights=str(ensemble.weights),
        config=str(ensemble.config.source or "<in memory>"),
        members=tuple(prediction.outcomes),
        timings_s=timings,
        notes=tuple(prediction.notes),
        quality=quality,
        run_hash=run_hash,
    )


def _log_case(name: str, report: RunReport, quality: dict) -> None:
    log.info(
        "%s -> %s: %d tumour voxels (%.1f ml); members used %s",
        name,
        report.output.path,
        report.output.tumor_voxels,
        report.tumor_volume_ml,
        report.members_used,
    )
    log.info("time per stage (s): %s", ", ".join(f"{k} {v:.1f}" for k, v in report.timings_s.items()))
    _log_quality(name, quality)


def _write_preview(volume: Volume, prediction: Prediction, target: Path, name: str) -> Path | None:
    from pantherseg.io.preview import write_preview

    try:
        return write_preview(volume, prediction.mask, target)
    except (OSError, ImportError, RuntimeError) as error:
        # The mask is written and correct; a missing picture must not fail the case.
        log.warning("%s: preview not written: %s", name, error)
        return None


def _is_dicom_folder(folder: Path) -> bool:
    from pantherseg.dicom import is_dicom_folder  # standard library only: no pydicom import here

    return is_dicom_folder(folder)


def _algorithm(ensemble: Ensemble, prediction, quality: dict | None = None):
    """What the DICOM outputs name as their algorithm: the members that contributed to this mask."""
    from pantherseg.dicom.seg import Algorithm

    return Algorithm(
        task=ensemble.task.name,
        members=tuple(prediction.members_used()),
        quality_score=None if quality is None else quality["score"],
        quality_review=None if quality is None else quality["review"],
    )


def _assess_quality(ensemble: Ensemble, prediction, volume) -> dict:
    """The case's quality block (pantherseg.engine.quality); the members' masks are released after it."""
    from pantherseg.engine.quality import assess_prediction

    quality = assess_prediction(
        prediction,
        members=ensemble.members,
        image_zyx=volume.data[0],
        spacing_zyx=volume.spacing_zyx,
        review_below=ensemble.config.quality_review_below,
    )
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
        log.info(
            "%s: quality score %.2f (review below %.2f): no review flag",
            name,
            quality["score"],
            quality["review_below"],
        )


def _write_member_probabilities(
    prediction, volume, folder: Path, stem: str, ensemble: Ensemble, written: WrittenFiles
) -> None:
    """Each member's probabilities (float32, a vector component per class) and its own mask (argmax);
    each path is added to ``written`` before its file is written, so a failed case can remove them all.

    All classes, not the tumour's alone: the ensemble's mask is the argmax of the mean, which the
    tumour probability alone cannot reproduce (0.45 tumour beats 0.30 pancreas and 0.25 background).
    """
    import SimpleITK as sitk

    tumor = ensemble.task.tumor_label
    for name, probabilities in prediction.member_probabilities.items():
        image = sitk.GetImageFromArray(
            np.ascontiguousarray(np.moveaxis(probabilities, 0, -1), dtype=np.float32), isVector=True
        )
        image.CopyInformation(volume.sitk_image)
        probabilities_path = written.add(folder / name / f"{stem}.mha")
        mask_path = written.add(folder / name / "masks" / f"{stem}.mha")
        write_image_atomically(image, probabilities_path)
        own_mask = (probabilities.argmax(0) == tumor).astype(np.uint8)
        write_image_atomically(mask_image(own_mask, volume.sitk_image), mask_path)
