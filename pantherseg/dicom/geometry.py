"""A stack of DICOM slices -> one regular 3D grid, or a refusal that says what was found.

DICOM gives each slice its own ImagePositionPatient (the centre of its first pixel, in patient
LPS millimetres) and ImageOrientationPatient (the row and column direction cosines). A 3D image
with one origin, spacing and direction exists only when every slice has the same orientation,
size and pixel spacing, and the slice positions lie on one line along the slice normal at one
constant step. Anything else is refused, never resampled: a segmentation on a silently resampled
grid would not map back onto the clinic's images, and an RTSTRUCT or SEG referencing them would be
wrong. The messages say what was found, so the user can fix the export or choose another series.

Axis orders: SimpleITK (x, y, z) = (along a row, along a column, along the slice normal).
DICOM PixelSpacing is (between rows, between columns) = (y, x): it is reversed here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pantherseg.errors import InputError

ORIENTATION_TOLERANCE = 1e-4  # direction cosines that differ by less are the same orientation
ORTHONORMAL_TOLERANCE = 1e-3
POSITION_TOLERANCE_MM = 0.01  # slice steps and in-plane drift may deviate this much (rounded decimals)
MIN_SLICES = 4  # the engine refuses axes shorter than 4 voxels (io.images.MIN_VOXELS_PER_AXIS)


@dataclass(frozen=True)
class SliceGeometry:
    """One slice's header values, as floats."""

    position: tuple[float, float, float]  # ImagePositionPatient, mm
    orientation: tuple[float, ...]  # ImageOrientationPatient: row cosines then column cosines
    pixel_spacing: tuple[float, float]  # PixelSpacing: (between rows, between columns), mm
    rows: int
    columns: int


@dataclass(frozen=True)
class StackGeometry:
    """The 3D grid of a valid stack. ``order[k]`` is the input index of the slice at z index k."""

    order: tuple[int, ...]
    origin_xyz: tuple[float, float, float]
    spacing_xyz: tuple[float, float, float]
    direction: tuple[float, ...]  # row-major 3x3; columns = row, column and slice-normal directions
    size_xyz: tuple[int, int, int]


def stack_geometry(slices: list[SliceGeometry], *, source: str) -> StackGeometry:
    """Sort ``slices`` along their normal and check they form one regular grid; raise InputError if not."""
    if len(slices) < MIN_SLICES:
        raise InputError(f"{source}: a 3D series needs at least {MIN_SLICES} slices, found {len(slices)}.")
    _check_same(slices, source)
    orientation = np.array(slices[0].orientation, dtype=float)
    row, column = orientation[:3], orientation[3:]
    if (
        abs(np.linalg.norm(row) - 1) > ORTHONORMAL_TOLERANCE
        or abs(np.linalg.norm(column) - 1) > ORTHONORMAL_TOLERANCE
        or abs(row @ column) > ORTHONORMAL_TOLERANCE
    ):
        raise InputError(
            f"{source}: ImageOrientationPatient {list(orientation)} is not two orthogonal unit "
            f"vectors; the header is corrupt."
        )
    normal = np.cross(row, column)
    normal /= np.linalg.norm(normal)

    positions = np.array([s.position for s in slices], dtype=float)
    distances = positions @ normal
    order = np.argsort(distances, kind="stable")
    positions, distances = positions[order], distances[order]
    steps = np.diff(distances)
    _check_no_duplicates(steps, distances, source)
    _check_no_tilt(positions, normal, source)
    spacing_z = _regular_step(steps, distances, source)

    row_spacing, column_spacing = slices[0].pixel_spacing
    direction = np.column_stack([row, column, normal])
    return StackGeometry(
        order=tuple(int(i) for i in order),
        origin_xyz=tuple(float(v) for v in positions[0]),
        spacing_xyz=(float(column_spacing), float(row_spacing), float(spacing_z)),
        direction=tuple(float(v) for v in direction.ravel()),
        size_xyz=(slices[0].columns, slices[0].rows, len(slices)),
    )


def _check_same(slices: list[SliceGeometry], source: str) -> None:
    orientations = np.array([s.orientation for s in slices], dtype=float)
    distinct = _distinct_rows(orientations, ORIENTATION_TOLERANCE)
    if len(distinct) > 1:
        shown = "; ".join("[" + ", ".join(f"{v:.4g}" for v in o) + "]" for o in distinct[:4])
        raise InputError(
            f"{source}: mixed orientations: {len(distinct)} different ImageOrientationPatient "
            f"values in one series ({shown}); a 3D image needs one orientation. Export each "
            f"orientation as its own series."
        )
    sizes = sorted({(s.rows, s.columns) for s in slices})
    if len(sizes) > 1:
        raise InputError(f"{source}: slices of different sizes (rows x columns {sizes}) in one series.")
    spacings = _distinct_rows(np.array([s.pixel_spacing for s in slices], dtype=float), 1e-4)
    if len(spacings) > 1:
        raise InputError(
            f"{source}: slices with different PixelSpacing ({[list(s) for s in spacings[:4]]} mm) in one series."
        )
    if min(slices[0].pixel_spacing) <= 0:
        raise InputError(f"{source}: PixelSpacing must be positive, found {list(slices[0].pixel_spacing)} mm.")


def _distinct_rows(values: np.ndarray, tolerance: float) -> list[np.ndarray]:
    distinct: list[np.ndarray] = []
    for value in values:
        if not any(np.max(np.abs(value - d)) <= tolerance for d in distinct):
            distinct.append(value)
    return distinct


def _check_no_duplicates(steps: np.ndarray, distances: np.ndarray, source: str) -> None:
    duplicates = int(np.count_nonzero(steps < POSITION_TOLERANCE_MM))
    if duplicates:
        where = float(distances[1:][steps < POSITION_TOLERANCE_MM][0])
        raise InputError(
            f"{source}: {duplicates} slice(s) share a position with another (first at {where:.2f} mm "
            f"along the normal): a multi-echo, dynamic or multi-phase series, or duplicate files. "
            f"Export one volume per series."
        )


def _check_no_tilt(positions: np.ndarray, normal: np.ndarray, source: str) -> None:
    """Slice positions must move along the normal only; a sideways drift is gantry tilt (a sheared grid)."""
    offsets = positions - positions[0]
    along = offsets @ normal
    sideways = np.linalg.norm(offsets - np.outer(along, normal), axis=1)
    if sideways.max() > POSITION_TOLERANCE_MM + 1e-6 * abs(along).max():
        angle = float(np.degrees(np.arctan2(sideways[-1], abs(along[-1]))))
        raise InputError(
            f"{source}: gantry tilt or sheared stack: slice positions drift {sideways.max():.2f} mm "
            f"sideways over {abs(along[-1]):.1f} mm along the slice normal (about {angle:.1f} degrees); "
            f"a sheared grid cannot be represented without resampling. Resample it to an orthogonal "
            f"grid first (e.g. dcm2niix's tilt correction) or choose another series."
        )


def _regular_step(steps: np.ndarray, distances: np.ndarray, source: str) -> float:
    """The one slice step, or a refusal naming missing slices or irregular spacing."""
    smallest = float(steps.min())
    if float(steps.max() - smallest) <= POSITION_TOLERANCE_MM:
        # End to end: rounding of individual positions does not accumulate.
        return float((distances[-1] - distances[0]) / (len(distances) - 1))
    multiples = steps / smallest
    gaps = np.flatnonzero(steps - smallest > POSITION_TOLERANCE_MM)
    if np.all(np.abs(multiples - np.round(multiples)) * smallest <= POSITION_TOLERANCE_MM):
        missing = int(np.round(multiples[gaps]).sum() - len(gaps))
        first = float(distances[gaps[0]])
        raise InputError(
            f"{source}: missing slices: the step is {smallest:.3f} mm but {len(gaps)} gap(s) skip about "
            f"{missing} slice(s) (first after the slice at {first:.2f} mm along the normal). Export the "
            f"complete series."
        )
    raise InputError(
        f"{source}: irregular slice spacing: steps between slices range from {smallest:.3f} to "
        f"{float(steps.max()):.3f} mm ({len(gaps)} of {len(steps)} differ from the smallest); a 3D image "
        f"needs one constant step. Export the series on a regular grid."
    )
