"""A PNG to look at a result quickly: three orthogonal slices through the tumour, mask overlaid.

``pantherseg predict --preview`` and ``inference.py --preview`` write ``<case>.preview.png`` beside
the mask. The slices go through the mask's centre of mass (the image centre when the mask is empty),
after reorienting image and mask to LPS so that every preview reads the same way whatever the
file's axis order: axial with anterior up and the patient's left on the right of the picture
(radiological convention), coronal and sagittal with superior up. Oblique images are shown in
their nearest axis-aligned orientation (no resampling). Pixels keep their physical aspect ratio
(spacing), intensities are windowed to the 0.5-99.5 percentiles of the non-zero voxels, and the
mask is drawn as a semi-transparent red fill with a red outline.

matplotlib is imported only here, and only its Agg canvas is used (no pyplot, no display needed).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pantherseg.io.files import atomic_file

if TYPE_CHECKING:
    from pantherseg.io.images import Volume

PREVIEW_SIZE_PX = (1200, 450)  # (width, height) of every preview PNG
DPI = 100
OVERLAY_RGB = (1.0, 0.0, 0.0)
OVERLAY_ALPHA = 0.45
WINDOW_PERCENTILES = (0.5, 99.5)
_PANEL_RECTS = [(0.01, 0.02, 0.32, 0.86), (0.34, 0.02, 0.32, 0.86), (0.67, 0.02, 0.32, 0.86)]  # figure fractions


@dataclass
class Panel:
    """One 2D view: ``image`` and ``mask`` are (rows, columns); ``aspect`` is row spacing / column spacing."""

    title: str
    image: np.ndarray
    mask: np.ndarray
    aspect: float
    origin: str  # "upper": row 0 at the top; "lower": row 0 at the bottom


def write_preview(volume: "Volume", mask_zyx: np.ndarray, path: Path | str) -> Path:
    """Write the preview PNG of ``volume`` with ``mask_zyx`` ((z, y, x), non-zero = tumour) to ``path``.

    The PNG is ``PREVIEW_SIZE_PX`` pixels; it is written to a hidden temporary file and renamed, so
    ``path`` never holds half a picture. Returns ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    path = Path(path)
    mask_zyx = np.asarray(mask_zyx)
    if mask_zyx.shape != volume.shape_zyx:
        raise ValueError(f"mask shape {mask_zyx.shape} (z,y,x) does not match the image {volume.shape_zyx}")
    panels, _ = preview_panels(volume, mask_zyx)
    low, high = intensity_window(volume.data[0])

    figure = Figure(figsize=(PREVIEW_SIZE_PX[0] / DPI, PREVIEW_SIZE_PX[1] / DPI), dpi=DPI, facecolor="black")
    FigureCanvasAgg(figure)
    overlay = ListedColormap([OVERLAY_RGB])
    for rect, panel in zip(_PANEL_RECTS, panels):
        axes = figure.add_axes(rect)
        axes.set_facecolor("black")
        axes.imshow(
            panel.image,
            cmap="gray",
            vmin=low,
            vmax=high,
            aspect=panel.aspect,
            origin=panel.origin,
            interpolation="nearest",
        )
        if panel.mask.any():
            axes.imshow(
                np.ma.masked_where(~panel.mask, panel.mask),
                cmap=overlay,
                alpha=OVERLAY_ALPHA,
                aspect=panel.aspect,
                origin=panel.origin,
                interpolation="nearest",
            )
            # Without X/Y, contour puts mask[i, j] at (j, i): imshow's pixel centres, whatever its origin.
            axes.contour(panel.mask.astype(np.float32), levels=[0.5], colors=[OVERLAY_RGB], linewidths=0.8)
        axes.set_title(panel.title, color="white", fontsize=9)
        axes.set_axis_off()
    tumour = int(np.count_nonzero(mask_zyx))
    volume_ml = tumour * float(np.prod(volume.spacing_zyx)) / 1000
    summary = (
        f"{volume.source}: tumour {volume_ml:.1f} ml ({tumour} voxels)"
        if tumour
        else f"{volume.source}: no tumour found (slices through the image centre)"
    )
    figure.text(0.5, 0.965, summary, color="white", fontsize=10, ha="center", va="center")
    return _save_atomically(figure, path)


def preview_panels(volume: "Volume", mask_zyx: np.ndarray) -> tuple[list[Panel], tuple[int, int, int]]:
    """The three LPS-oriented views and the (z, y, x) voxel they cross at, in LPS array order."""
    image, mask, spacing = _to_lps(volume, mask_zyx)
    if mask.any():
        centre = tuple(int(round(c)) for c in np.argwhere(mask).mean(axis=0))
    else:
        centre = tuple(s // 2 for s in image.shape)
    z, y, x = centre
    sz, sy, sx = spacing
    # LPS arrays: x grows to the patient's left, y to posterior, z to superior; so axial shows
    # anterior up and the patient's left on the right, sagittal anterior on the left.
    panels = [
        Panel(f"axial (slice {z + 1}/{image.shape[0]})", image[z], mask[z], sy / sx, "upper"),
        Panel(f"coronal (slice {y + 1}/{image.shape[1]})", image[:, y, :], mask[:, y, :], sz / sx, "lower"),
        Panel(f"sagittal (slice {x + 1}/{image.shape[2]})", image[:, :, x], mask[:, :, x], sz / sy, "lower"),
    ]
    return panels, centre


def intensity_window(data: np.ndarray) -> tuple[float, float]:
    """Percentile window of the non-zero voxels (all voxels when there are none), on a subsample."""
    step = max(1, data.size // 2_000_000)
    sample = data.ravel()[::step]
    nonzero = sample[sample != 0]
    values = nonzero if nonzero.size else sample
    low, high = (float(v) for v in np.percentile(values, WINDOW_PERCENTILES))
    if not high > low:
        high = low + 1.0
    return low, high


def _to_lps(volume: "Volume", mask_zyx: np.ndarray):
    """Image and mask as (z, y, x) arrays permuted/flipped to the nearest LPS orientation, and their spacing."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(volume.data[0])
    image.CopyInformation(volume.sitk_image)
    mask = sitk.GetImageFromArray(np.ascontiguousarray(mask_zyx != 0, dtype=np.uint8))
    mask.CopyInformation(volume.sitk_image)
    image = sitk.DICOMOrient(image, "LPS")
    mask = sitk.DICOMOrient(mask, "LPS")
    spacing_zyx = tuple(float(s) for s in reversed(image.GetSpacing()))
    return sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(mask).astype(bool), spacing_zyx


def _save_atomically(figure, path: Path) -> Path:
    with atomic_file(path) as tmp, open(tmp, "wb") as handle:
        figure.savefig(handle, format="png", dpi=DPI, facecolor=figure.get_facecolor())
    return path
