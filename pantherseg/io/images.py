"""Reading MRI volumes, checking they can be segmented, and writing masks atomically.

Axis orders: SimpleITK speaks (x, y, z) for size, spacing and origin; numpy arrays from
``GetArrayFromImage`` are (z, y, x). nnU-Net works on the numpy order and wants spacing reversed
to (z, y, x), exactly as its own ``SimpleITKIO`` reader gives it; the direction matrix is carried
through untouched and copied onto the mask, like nnU-Net does.

Decisions on unusual input (documented in the README):
- 2D, 4D and multi-component (vector) images, axes shorter than ``MIN_VOXELS_PER_AXIS`` and
  non-positive spacing are refused.
- Integer and float64 images are converted to float32 (nnU-Net does the same).
- NaN/Inf voxels are set to 0 with a warning; an image without any finite voxel is refused, and so
  is one with intensities beyond ``MAX_ABS_INTENSITY`` (float32 normalisation would overflow) or
  complex voxels.
- The header is checked (and the memory needed to read the voxels estimated) before any voxel is read.
- Oblique and left-handed direction matrices are fine: the mask gets the same matrix.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pantherseg.errors import InputError, OutputError, one_line
from pantherseg.io.detached_headers import data_file, require_data_file
from pantherseg.io.files import atomic_file, resolves_inside
from pantherseg.io.voxel_bytes import check_voxels_present

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".mha", ".mhd", ".nii.gz", ".nii", ".nrrd")
MIN_VOXELS_PER_AXIS = 4
# Z-score normalisation squares deviations in float32 (max 3.4e38): beyond ~1.8e19 it overflows.
MAX_ABS_INTENSITY = 1e18
# Largest deviation of a direction matrix's D^T D from the identity: headers store ~6 digits.
ORTHONORMAL_TOLERANCE = 1e-3
# Free space an output folder needs before the networks run (a compressed uint8 mask plus its report).
MIN_FREE_BYTES = 16 * 1024**2


@dataclass
class Volume:
    """An image as nnU-Net wants it, plus the SimpleITK image it came from (to give the mask its geometry)."""

    data: np.ndarray  # (1, z, y, x) float32
    spacing_zyx: tuple[float, float, float]
    # The SimpleITK image as read: the mask copies its size, spacing, origin and direction.
    sitk_image: object = field(repr=False)
    source: str = "<memory>"
    notes: list[str] = field(default_factory=list)

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.data.shape[1:])

    @property
    def voxel_mm3(self) -> float:
        """One voxel's volume: what the run report and the SR count tumour volumes in."""
        return float(np.prod(self.spacing_zyx))

    def nnunet_properties(self) -> dict:
        """The property dict nnU-Net's SimpleITKIO reader would return for this image."""
        ref = self.sitk_image
        return {
            "sitk_stuff": {
                "spacing": ref.GetSpacing(),
                "origin": ref.GetOrigin(),
                "direction": ref.GetDirection(),
            },
            "spacing": list(self.spacing_zyx),
        }

    def geometry(self) -> dict:
        ref = self.sitk_image
        return {
            "size_xyz": list(ref.GetSize()),
            "spacing_xyz": list(ref.GetSpacing()),
            "origin_xyz": list(ref.GetOrigin()),
            "direction": list(ref.GetDirection()),
            "pixel_type": ref.GetPixelIDTypeAsString(),
        }


def image_stem(path: Path | str) -> str:
    """The file name without its image suffix (``case.nii.gz`` -> ``case``)."""
    name = Path(path).name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES) and not path.name.startswith(".")


def read_volume(path: Path | str) -> Volume:
    """Read an image file and check it is a 3D scalar volume nnU-Net can segment."""
    path = Path(path)
    reader = checked_reader(path)
    try:
        image = reader.Execute()
    except RuntimeError as error:
        raise _unreadable(path, error) from error
    return volume_from_image(image, source=path.name)


def checked_reader(path: Path | str):
    """A SimpleITK ``ImageFileReader`` for ``path`` whose header passed every check; no voxel read yet.

    What ``segment`` and ``evaluate`` both ask of a file before its voxels are decoded: a regular file
    inside its folder (links out refused), a data file named by the header inside that folder, a 3D
    scalar header with positive finite spacing and a finite rotation, a voxel count and memory need
    within bounds, and (NIfTI) every promised voxel byte present. Raises InputError or ResourceError.
    """
    import SimpleITK as sitk

    from pantherseg.io.host_memory import check_image_fits, check_voxel_count

    path = Path(path)
    if not path.is_file():
        raise InputError(f"Input image not found: expected a file at {path}.")
    if path.is_symlink() and not resolves_inside(path, path.parent):
        raise InputError(
            f"{path.name} is a link to {path.resolve()}, outside its folder {path.parent.resolve()}; "
            f"refused (an input folder must not make the run read other files). Copy the image in."
        )
    # A header naming its voxels' file elsewhere (.mhd, .nrrd) is checked as text before ITK opens anything.
    voxel_file = data_file(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        # The header first: a bad or huge image is refused before any voxel is read (or decompressed).
        reader.ReadImageInformation()
    except RuntimeError as error:
        raise _unreadable(path, error) from error
    _check_header(
        reader.GetDimension(),
        reader.GetNumberOfComponents(),
        list(reader.GetSize()),
        list(reader.GetSpacing()),
        sitk.GetPixelIDValueAsString(reader.GetPixelID()),
        path.name,
    )
    _check_geometry(list(reader.GetOrigin()), list(reader.GetDirection()), path.name)
    voxel_bytes = sitk.Image([1] * reader.GetDimension(), reader.GetPixelID()).GetSizeOfPixelComponent()
    check_image_fits(reader.GetSize(), voxel_bytes, source=path.name)
    check_voxel_count(reader.GetSize(), source=path.name)
    require_data_file(path, voxel_file)
    # ITK zero-fills a truncated NIfTI: every promised byte must be there before it reads.
    check_voxels_present(path, math.prod(reader.GetSize()) * voxel_bytes * reader.GetNumberOfComponents(), voxel_file)
    return reader


def _unreadable(path: Path, error: RuntimeError) -> InputError:
    return InputError(
        f"{path.name} cannot be read as a medical image (corrupt, truncated or not an image?): "
        f"{itk_error_line(str(error))}"
    )


def _check_header(dimension: int, components: int, size: list, spacing: list, pixel_type: str, source: str) -> None:
    """The checks that need only the header: 3D, one component, big enough, positive finite spacing."""
    if dimension != 3:
        raise InputError(f"{source}: expected a 3D volume, found a {dimension}D image of size {size}.")
    if "complex" in pixel_type.lower():
        raise InputError(
            f"{source}: expected real intensities, found complex voxels ({pixel_type}); save the magnitude image."
        )
    if components != 1:
        raise InputError(
            f"{source}: expected one intensity per voxel, found {components} components per voxel "
            f"({pixel_type}); convert it to a scalar image."
        )
    if min(size) < MIN_VOXELS_PER_AXIS:
        raise InputError(
            f"{source}: expected at least {MIN_VOXELS_PER_AXIS} voxels on every axis, found size {size} (x,y,z)."
        )
    if not all(np.isfinite(s) and s > 0 for s in spacing):
        raise InputError(
            f"{source}: voxel spacing must be positive, found {_numbers(spacing)} mm (x,y,z) in the header."
        )


def _check_geometry(origin: list, direction: list, source: str) -> None:
    """Finite origin and direction, and a direction that is a rotation (possibly with a flip).

    A NaN origin or direction (e.g. a NIfTI sform holding NaN) would be copied onto the mask, which
    then cannot be read back; a sheared or scaled matrix means the voxel grid is not rectilinear in
    patient space, while nnU-Net treats every volume as one: its masks would be placed wrongly.
    """
    if not all(np.isfinite(v) for v in [*origin, *direction]):
        raise InputError(
            f"{source}: the header's origin {_numbers(origin)} or direction {_numbers(direction)} "
            f"holds NaN or infinite values; fix the image's geometry (NIfTI: its sform/qform)."
        )
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)
    error = float(np.abs(matrix.T @ matrix - np.eye(3)).max())
    if error > ORTHONORMAL_TOLERANCE:
        raise InputError(
            f"{source}: the direction matrix {_numbers(direction)} is sheared or scaled (its columns are not "
            f"unit-length and perpendicular; off by {error:.2g}); nnU-Net assumes a rectilinear grid, so the "
            f"mask would be misplaced. Resample the image onto an orthonormal grid first."
        )


def _numbers(values: list) -> str:
    """Numbers for a one-line message: huge ones with 4 significant digits, so 1e300 is not 300 characters."""
    return "[" + ", ".join(repr(round(float(v), 6)) if abs(float(v)) < 1e6 else f"{float(v):.4g}" for v in values) + "]"


def volume_from_image(image, *, source: str = "<memory>") -> Volume:
    """Check a SimpleITK image and convert it to nnU-Net's array layout."""
    import SimpleITK as sitk

    spacing = list(image.GetSpacing())
    _check_header(
        image.GetDimension(),
        image.GetNumberOfComponentsPerPixel(),
        list(image.GetSize()),
        spacing,
        image.GetPixelIDTypeAsString(),
        source,
    )
    _check_geometry(list(image.GetOrigin()), list(image.GetDirection()), source)

    array = sitk.GetArrayFromImage(image)  # (z, y, x), our own copy: changing it touches nothing else
    notes = []
    if array.dtype.kind == "f":  # checked before the float32 cast, which would turn huge float64 values into Inf
        finite = np.isfinite(array)
        count = int(array.size - np.count_nonzero(finite))
        if count == array.size:
            raise InputError(f"{source}: every voxel is NaN or infinite; there is nothing to segment.")
        if count:
            array[~finite] = 0
            notes.append(f"{count} NaN/Inf voxels set to 0")
            log.warning("%s: %d NaN/Inf voxels set to 0 before segmentation", source, count)
        del finite
    peak = max(float(array.max()), -float(array.min()))
    if peak > MAX_ABS_INTENSITY:
        raise InputError(
            f"{source}: intensities reach {peak:.3g}; above {MAX_ABS_INTENSITY:.0e} nnU-Net's float32 "
            f"normalisation overflows. Rescale the image (MRI intensities are arbitrary units)."
        )
    data = array.astype(np.float32, copy=False)[None]
    return Volume(
        data=np.ascontiguousarray(data),
        spacing_zyx=tuple(float(s) for s in reversed(spacing)),
        sitk_image=image,
        source=source,
        notes=notes,
    )


def itk_error_line(message: str) -> str:
    """SimpleITK's errors are multi-line with file/line noise; keep the human part (the line naming
    the ITK error or its description, else the last line)."""
    message = re.sub(r"\(0x[0-9a-fA-F]+\)", "", message)  # ITK object addresses mean nothing to a user
    for line in reversed([line.strip() for line in message.splitlines()]):
        if "ITK ERROR" in line or "Could not create IO object" in line or "Description" in line:
            return line.split(":", 1)[-1].strip() if line.startswith("Description") else line
    return one_line(message, last=True)


def mask_image(mask_zyx: np.ndarray, reference) -> object:
    """A uint8 SimpleITK image of ``mask_zyx`` with the reference's size, spacing, origin and direction."""
    import SimpleITK as sitk

    expected = tuple(reversed(reference.GetSize()))
    if mask_zyx.shape != expected:
        raise ValueError(f"mask shape {mask_zyx.shape} (z,y,x) does not match the image {expected}")
    mask = sitk.GetImageFromArray(np.ascontiguousarray(mask_zyx, dtype=np.uint8))
    mask.CopyInformation(reference)
    return mask


def write_image_atomically(image, path: Path | str) -> Path:
    """Write ``image`` (compressed) so that ``path`` either does not exist or holds the whole file.

    The data goes through :func:`pantherseg.io.files.atomic_file` (a hidden, uniquely named file in the
    same folder, renamed over ``path`` only when complete); the suffix of the temporary name is
    ``path``'s, so SimpleITK picks the same writer.
    A write that fails (read-only or full disk, a folder in the way) raises OutputError.
    """
    import SimpleITK as sitk

    path = Path(path)
    suffix = ".nii.gz" if path.name.lower().endswith(".nii.gz") else path.suffix
    try:
        with atomic_file(path, suffix=suffix) as tmp:
            if path.is_dir():
                raise OutputError(f"Cannot write the mask {path}: a folder of that name is in the way; remove it.")
            sitk.WriteImage(image, str(tmp), useCompression=True)
    except OSError as error:
        raise OutputError(f"Cannot write {path}: {error.strerror or error}.") from error
    except RuntimeError as error:  # ITK's writer: permission denied, no space left
        raise OutputError(f"Cannot write {path}: {itk_error_line(str(error))}") from error
    return path


def check_writable(folders, files=()) -> None:
    """Before any network runs: each folder can be created and written, has room, and no file is a folder.

    Raises OutputError naming the folder and the reason. A probe file is created and removed in each
    folder: permissions alone do not tell (root, read-only mounts, ACLs).
    """
    for folder in dict.fromkeys(Path(f) for f in folders if f is not None):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            handle, probe = tempfile.mkstemp(prefix=".pantherseg-probe-", dir=folder)
            os.close(handle)
            os.unlink(probe)
            free = shutil.disk_usage(folder).free
        except OSError as error:
            raise OutputError(
                f"Output folder {folder} is not writable: {error.strerror or error}; choose a writable folder."
            ) from error
        if free < MIN_FREE_BYTES:
            raise OutputError(
                f"Output folder {folder} has only {free // 1024} KiB free "
                f"({os.strerror(errno.ENOSPC)}); at least {MIN_FREE_BYTES // 1024**2} MiB are needed."
            )
    for file in files:
        if Path(file).is_dir():
            raise OutputError(f"Cannot write the mask {file}: a folder of that name is in the way; remove it.")
