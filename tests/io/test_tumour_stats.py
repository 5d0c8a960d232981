"""pantherseg.io.tumour_stats: volume, 26-connected components, the largest one's box in patient coordinates."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from pantherseg.io.tumour_stats import tumour_statistics


def _reference(direction=(0, -1, 0, 1, 0, 0, 0, 0, -1)):
    image = sitk.Image(12, 10, 8, sitk.sitkUInt8)  # (x, y, z)
    image.SetSpacing((2.0, 1.0, 3.0))
    image.SetOrigin((100.0, -50.0, 20.0))
    image.SetDirection(direction)
    return image


def test_volume_components_and_the_largest_box_in_patient_coordinates():
    reference = _reference()
    mask = np.zeros((8, 10, 12), dtype=np.uint8)  # (z, y, x)
    mask[2:4, 3:5, 4:6] = 1  # 8 voxels
    mask[4, 5, 6] = 1  # touches the block by a corner only: the same component (26-connectivity)
    mask[7, 0, 0] = 1  # an island of one voxel
    stats = tumour_statistics(mask, reference)
    assert stats["volume_ml"] == 10 * 6.0 / 1000 and stats["components"] == 2 and stats["connectivity"] == 26
    largest = stats["largest_component"]
    assert largest["voxels"] == 9 and largest["volume_ml"] == 9 * 6.0 / 1000
    corners = np.array(
        [reference.TransformIndexToPhysicalPoint((x, y, z)) for x in (4, 6) for y in (3, 5) for z in (2, 4)]
    )
    # The direction's columns send index x to patient +y, y to patient -x, z to patient -z.
    assert largest["bounding_box_mm"]["min_xyz"] == [round(v, 3) for v in corners.min(0)] == [95.0, -42.0, 8.0]
    assert largest["bounding_box_mm"]["max_xyz"] == [round(v, 3) for v in corners.max(0)] == [97.0, -38.0, 14.0]


def test_an_empty_mask_has_no_components():
    stats = tumour_statistics(np.zeros((8, 10, 12), dtype=np.uint8), _reference())
    assert stats == {"volume_ml": 0.0, "components": 0, "connectivity": 26, "largest_component": None}
