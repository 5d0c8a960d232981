"""The cohort's case list: which files, in which order, under which output names, in which part.

Rules (the same on every machine, so N processes given the same arguments agree on the list):
- A folder is searched recursively for image files (.mha, .nii.gz, .nii, .mhd, .nrrd); hidden files
  and anything inside the output folder are ignored. A file given directly is one case. A folder that
  holds DICOM files and no image files is one case too: its series (pantherseg.dicom), which is what
  the DICOM output formats (dicom-seg, rtstruct) need.
- A case's output name is its path relative to the folder it was found in, without the image
  suffix, with "/" replaced by "__": ``site_a/case1.mha`` -> ``site_a__case1``; a file directly in
  the folder keeps its stem, as ``pantherseg predict`` names it; a DICOM folder is named by its path
  (``site_a/patient7/``, -> ``site_a__patient7``; an input folder that is itself one: its name). The name depends on the file alone,
  never on which other files exist, so adding cases to a cohort never renames finished ones.
- Two inputs with the same output name are refused, naming both files.
- The list is sorted by output name; part K of N is every N-th case starting at K (round-robin, as
  nnU-Net's ``-num_parts/-part_id``), which spreads large and small cases evenly over the parts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from pantherseg.errors import InputError
from pantherseg.io.images import image_stem, is_image_file

SUBFOLDER_SEPARATOR = "__"


@dataclass(frozen=True)
class Case:
    """One input (an image file or a DICOM folder) and the stem its outputs and report get
    (``<name>.mha``, ``<name>.report.json``)."""

    name: str
    path: Path


def case_name(path: Path, root: Path | None) -> str:
    """``root/a/b/case.nii.gz`` -> ``a__b__case``; a file given directly (root None) -> its stem; a DICOM
    folder ``root/a/b/`` -> ``a__b``."""
    if root is None:
        return path.name if path.is_dir() else image_stem(path)
    relative = path.relative_to(root)
    if path.is_dir():
        return SUBFOLDER_SEPARATOR.join(relative.parts) or path.name
    return SUBFOLDER_SEPARATOR.join([*relative.parent.parts, image_stem(relative.name)])


def list_cases(inputs: Path | str | Sequence[Path | str], *, exclude: Path | str | None = None) -> list[Case]:
    """Every image file under ``inputs`` (files and folders), sorted by output name, names unique.

    ``exclude``: a folder whose contents are never cases (the output folder, which may lie inside an
    input folder). Raises InputError for a missing input, an empty cohort or a name clash.
    """
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    excluded = Path(exclude).resolve() if exclude is not None else None
    cases: dict[str, Case] = {}
    for item in map(Path, inputs):
        item = item.absolute()
        if item.is_dir() and excluded is not None and item.resolve() == excluded:
            raise InputError(
                f"The output folder {item} is also an input folder: its masks would become cases "
                f"of the next run. Write the masks to another folder."
            )
        if item.is_dir():
            found = [Case(case_name(path, item), path) for path in _case_paths(item, excluded)]
            if not found:
                raise InputError(
                    f"No images in {item} or its subfolders: expected .mha, .nii.gz, .nii, .mhd "
                    f"or .nrrd files, or folders of DICOM files."
                )
        elif item.is_file():
            found = [Case(case_name(item, None), item)]
        else:
            raise InputError(f"Input not found: {item} is neither an image file nor a folder.")
        for case in found:
            other = cases.get(case.name)
            if other is not None and other.path != case.path:
                raise InputError(
                    f"{other.path} and {case.path} would both write the outputs '{case.name}.*'; rename one of them."
                )
            cases[case.name] = case
    return [cases[name] for name in sorted(cases)]


def _case_paths(root: Path, excluded: Path | None) -> list[Path]:
    """The image files under ``root``, and the folders that hold DICOM files but no image file."""
    from pantherseg.dicom import is_dicom_file  # the standard library only

    paths = []
    for folder, subfolders, names in os.walk(root, followlinks=False):
        here = Path(folder)
        subfolders[:] = sorted(
            s for s in subfolders if not s.startswith(".") and (excluded is None or (here / s).resolve() != excluded)
        )
        images = [here / name for name in names if is_image_file(here / name)]
        paths.extend(images)
        if not images and any(
            not name.startswith(".") and (here / name).is_file() and is_dicom_file(here / name) for name in names
        ):  # is_file first: a FIFO is never opened
            paths.append(here)
    return paths


def check_part(num_parts: int, part_id: int) -> None:
    if num_parts < 1:
        raise InputError(f"--num-parts must be at least 1, found {num_parts}.")
    if not 0 <= part_id < num_parts:
        raise InputError(f"--part-id must be in [0, {num_parts - 1}] for --num-parts {num_parts}, found {part_id}.")


def split_cases(cases: Sequence[Case], num_parts: int, part_id: int) -> list[Case]:
    """Part ``part_id`` of ``num_parts``: cases ``part_id``, ``part_id + num_parts``, ... of the sorted list."""
    check_part(num_parts, part_id)
    return list(cases[part_id::num_parts])
