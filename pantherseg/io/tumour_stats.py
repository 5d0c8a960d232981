"""Tumour statistics for the run report: volume, connected components, the largest one's extent.

Connected components use full 3D connectivity (26 neighbours: voxels touching by a face, an edge
or a corner belong together). The bounding box is axis-aligned in patient coordinates (LPS mm, as
DICOM and ITK define them) and spans the centres of the largest component's voxels, so it is exact
for oblique and flipped images alike.
"""

from __future__ import annotations

import numpy as np


def tumour_statistics(mask_zyx: np.ndarray, reference) -> dict:
    """Statistics of a binary (z, y, x) mask on the grid of the SimpleITK image ``reference``."""
    from scipy import ndimage

    spacing = np.array(reference.GetSpacing(), dtype=float)  # (x, y, z)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    labels, count = ndimage.label(mask_zyx.astype(bool), structure=np.ones((3, 3, 3), dtype=bool))
    stats = {
        "volume_ml": round(int(np.count_nonzero(labels)) * voxel_ml, 4),
        "components": int(count),
        "connectivity": 26,
        "largest_component": None,
    }
    if count == 0:
        return stats
    sizes = np.bincount(labels.ravel())[1:]
    largest = int(np.argmax(sizes)) + 1
    index_zyx = np.argwhere(labels == largest)
    direction = np.array(reference.GetDirection(), dtype=float).reshape(3, 3)
    points = np.array(reference.GetOrigin()) + (index_zyx[:, ::-1] * spacing) @ direction.T
    stats["largest_component"] = {
        "volume_ml": round(int(sizes[largest - 1]) * voxel_ml, 4),
        "voxels": int(sizes[largest - 1]),
        "bounding_box_mm": {
            "min_xyz": [round(float(v), 3) for v in points.min(0)],
            "max_xyz": [round(float(v), 3) for v in points.max(0)],
            "frame": "patient LPS, voxel centres",
        },
    }
    return stats
