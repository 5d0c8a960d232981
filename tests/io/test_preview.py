"""The --preview PNG: three LPS-oriented slices through the tumour, the mask in red where it is."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from pantherseg.io.images import read_volume, volume_from_image
from pantherseg.io.preview import _PANEL_RECTS, PREVIEW_SIZE_PX, preview_panels, write_preview

from conftest import AMOS_INPUT, synthetic_image


def red_pixels(png: Path) -> np.ndarray:
    """(row, column) of the overlay's pixels: red well above green and blue (grey has R = G = B)."""
    from matplotlib.image import imread

    rgb = imread(png)[..., :3]
    assert rgb.shape[:2] == (PREVIEW_SIZE_PX[1], PREVIEW_SIZE_PX[0])
    red = (rgb[..., 0] - rgb[..., 1] > 0.25) & (np.abs(rgb[..., 1] - rgb[..., 2]) < 0.05)
    return np.argwhere(red)


def panel_of(column: float) -> int:
    return next(
        i
        for i, (left, _, width, _) in enumerate(_PANEL_RECTS)
        if left * PREVIEW_SIZE_PX[0] <= column < (left + width) * PREVIEW_SIZE_PX[0]
    )


def panel_centre(index: int) -> tuple[float, float]:
    """(row, column) of a panel's centre in the PNG (rows count from the top)."""
    left, bottom, width, height = _PANEL_RECTS[index]
    return ((1 - bottom - height / 2) * PREVIEW_SIZE_PX[1], (left + width / 2) * PREVIEW_SIZE_PX[0])


def lps_image(shape_zyx=(20, 40, 48), spacing_xyz=(1.0, 1.0, 2.5)):
    """Identity direction: array x grows to the patient's left, y to posterior, z to superior."""
    return synthetic_image(shape_zyx, spacing_xyz=spacing_xyz, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))


def test_overlay_is_drawn_where_the_mask_is(tmp_path):
    """A tumour at the patient's left, anterior and superior shows up: axial right-top, coronal right-top,
    sagittal left-top (radiological convention, superior up, anterior on the left)."""
    volume = volume_from_image(lps_image(), source="case.mha")
    mask = np.zeros(volume.shape_zyx, np.uint8)
    mask[14:18, 5:12, 34:44] = 1  # superior, anterior, patient's left
    path = write_preview(volume, mask, tmp_path / "case.preview.png")

    assert path == tmp_path / "case.preview.png" and path.is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["case.preview.png"]  # no temporary file left
    pixels = red_pixels(path)
    assert len(pixels)
    panels = np.array([panel_of(c) for c in pixels[:, 1]])
    assert set(panels) == {0, 1, 2}
    expected_side = {0: (-1, +1), 1: (-1, +1), 2: (-1, -1)}  # (row sign: up, column sign) per panel
    for index, (row_sign, column_sign) in expected_side.items():
        rows, columns = pixels[panels == index].T
        centre_row, centre_column = panel_centre(index)
        assert np.sign(rows.mean() - centre_row) == row_sign, index
        assert np.sign(columns.mean() - centre_column) == column_sign, index


def test_slices_go_through_the_centre_of_mass_and_respect_spacing():
    volume = volume_from_image(lps_image(spacing_xyz=(0.8, 1.0, 3.0)))
    mask = np.zeros(volume.shape_zyx, np.uint8)
    mask[4:7, 10:13, 20:31] = 1
    panels, centre = preview_panels(volume, mask)
    assert centre == (5, 11, 25)
    assert [p.aspect for p in panels] == pytest.approx([1.0 / 0.8, 3.0 / 0.8, 3.0 / 1.0])
    assert [p.image.shape for p in panels] == [(40, 48), (20, 48), (20, 40)]
    assert all(p.mask.any() for p in panels)


def test_empty_mask_uses_the_image_centre_and_draws_no_overlay(tmp_path):
    volume = volume_from_image(lps_image())
    panels, centre = preview_panels(volume, np.zeros(volume.shape_zyx, np.uint8))
    assert centre == (10, 20, 24)
    path = write_preview(volume, np.zeros(volume.shape_zyx, np.uint8), tmp_path / "empty.png")
    assert len(red_pixels(path)) == 0


def test_oblique_flipped_image_is_shown_in_lps(tmp_path):
    """The default synthetic image has its y axis flipped: the preview flips it back."""
    image = synthetic_image((20, 40, 48), spacing_xyz=(1.0, 1.0, 2.5))
    volume = volume_from_image(image)
    mask = np.zeros(volume.shape_zyx, np.uint8)
    mask[8:12, 30:38, 20:28] = 1  # array y high = physical y low = anterior, since the direction flips y
    panels, _ = preview_panels(volume, mask)
    rows = np.argwhere(panels[0].mask)[:, 0]
    assert rows.mean() < panels[0].mask.shape[0] / 2  # anterior: upper half of the axial view


def test_bundled_sample_preview(tmp_path):
    images = sorted((AMOS_INPUT / "images" / "abdominal-t1-mri").glob("*.mha"))
    volume = read_volume(images[0])
    mask = np.zeros(volume.shape_zyx, np.uint8)
    z, y, x = (s // 2 for s in volume.shape_zyx)
    mask[z - 3 : z + 3, y - 8 : y + 8, x - 8 : x + 8] = 1
    path = write_preview(volume, mask, tmp_path / "nested" / "amos.preview.png")
    assert path.is_file()
    assert len(red_pixels(path)) > 100


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def fail(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", fail)
    volume = volume_from_image(lps_image())
    with pytest.raises(OSError, match="disk full"):
        write_preview(volume, np.zeros(volume.shape_zyx, np.uint8), tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_mask_of_the_wrong_shape_is_a_bug_not_a_picture(tmp_path):
    volume = volume_from_image(lps_image())
    with pytest.raises(ValueError, match="does not match"):
        write_preview(volume, np.zeros((3, 3, 3), np.uint8), tmp_path / "x.png")


def test_segment_writes_the_preview(tmp_path, tiny_weights, tiny_config):
    """Through the API; a constant image keeps the networks from running, so this is quick."""
    from pantherseg.api import segment

    image = sitk.Image([24, 20, 10], sitk.sitkFloat32) + 5.0
    path = tmp_path / "case.mha"
    sitk.WriteImage(image, str(path))
    results = segment(
        path,
        output_dir=tmp_path / "out",
        config=tiny_config,
        weights=tiny_weights,
        device="cpu",
        preview_dir=tmp_path / "previews",
        report_dir=tmp_path / "out",
    )
    assert results[0].preview_path == tmp_path / "previews" / "case.preview.png"
    assert results[0].preview_path.is_file()
    assert json.loads(results[0].report_path.read_text())["output"]["tumor_voxels"] == 0
