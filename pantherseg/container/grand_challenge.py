"""grand-challenge.org's folder contract: find the one input image, name the one output mask.

The platform writes ``/input/inputs.json`` (a list of {"interface": {"slug", "kind", "relative_path"},
"image": {"pk", "name"}} objects) and the image itself under ``/input/<relative_path>/<opaque>.mha``.
It expects exactly one image in ``/output/images/<output slug>/`` and shows the user only the
last line of stderr when something fails, so every problem here is one InputError line.

A "DICOM image set" socket (interface kind ``DICOM Image Set``) delivers one series instead: every
instance as ``/input/<relative_path>/<SOPInstanceUID>.dcm`` (grand-challenge's
``components/backends/base.py`` copies each instance of the image set there, in its stored transfer
syntax). Its slug is the task's input slug with ``-dicom`` appended (``abdominal-t1-mri-dicom``,
``abdominal-t2-mri-dicom``), or anything with ``--task``. The case is then that folder, read by
``pantherseg.dicom`` (pydicom, which the image must then hold); the mask is the same ``.mha``. Only the
standard library looks at the folder here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pantherseg.config import EnsembleConfig, TaskSpec
from pantherseg.errors import InputError, OutputError, short_repr
from pantherseg.io.images import image_stem, is_image_file
from pantherseg.json_files import read_json_object

INPUTS_JSON = "inputs.json"
DICOM_IMAGE_SET_KIND = "DICOM Image Set"  # the interface kind's label, as the platform's serializer writes it
DICOM_SLUG_SUFFIX = "-dicom"  # a DICOM image set socket of a task: <input slug>-dicom


@dataclass(frozen=True)
class GrandChallengeCase:
    task: TaskSpec
    image: Path  # the image file; for a DICOM image set, the folder of its <SOPInstanceUID>.dcm files
    uploaded_name: str | None  # the uploader's original file name, from inputs.json
    dicom: bool = False  # a DICOM image set

    def output_path(self, output_dir: Path) -> Path:
        return Path(output_dir) / "images" / self.task.output_slug / f"{image_stem(self.image)}.mha"


def locate_case(input_dir: Path, config: EnsembleConfig, *, task: str | None = None) -> GrandChallengeCase:
    """Find the task and the single image of a grand-challenge style ``input_dir``."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise InputError(f"Input folder not found: expected grand-challenge's input at {input_dir}.")
    inputs_json = input_dir / INPUTS_JSON
    if inputs_json.exists():
        entries = _read_inputs_json(inputs_json)
        task_spec, folder, uploaded = _case_from_inputs_json(entries, input_dir, config, task)
    else:
        task_spec, folder = _case_from_folders(input_dir, config, task)
        uploaded = None
    if _holds_dicom_image_set(folder):
        return GrandChallengeCase(
            task=task_spec, image=_dicom_image_set(folder, task_spec), uploaded_name=uploaded, dicom=True
        )
    return GrandChallengeCase(task=task_spec, image=_single_image(folder, task_spec), uploaded_name=uploaded)


def _read_inputs_json(path: Path) -> list[dict]:
    entries = read_json_object(path, error=InputError, what="grand-challenge's list of inputs", top=list)
    if not all(
        isinstance(e, dict) and isinstance(e.get("interface"), dict) and isinstance(e["interface"].get("slug"), str)
        for e in entries
    ):
        raise InputError(
            f"{path} must be a list of objects with interface.slug, as grand-challenge writes it; "
            f"found {short_repr(entries, 200)}."
        )
    return entries


def _task_slug(entry: dict) -> str:
    """The task input slug an inputs.json entry stands for: its slug, or a DICOM image set's slug less ``-dicom``."""
    slug = entry["interface"]["slug"]
    if entry["interface"].get("kind") == DICOM_IMAGE_SET_KIND and slug.endswith(DICOM_SLUG_SUFFIX):
        return slug[: -len(DICOM_SLUG_SUFFIX)]
    return slug


def _case_from_inputs_json(entries, input_dir: Path, config: EnsembleConfig, task: str | None):
    slugs = [e["interface"]["slug"] for e in entries]
    if task is not None:
        forced = config.task(task)
        matching = [(forced, e) for e in entries if _task_slug(e) == forced.input_slug]
        dicom_sets = [e for e in entries if e["interface"].get("kind") == DICOM_IMAGE_SET_KIND]
        if not matching and len(dicom_sets) == 1:  # a forced task takes the one DICOM image set, whatever its slug
            matching = [(forced, dicom_sets[0])]
        if not matching:
            # The user forced the task; accept its folder even if inputs.json lists something else.
            return forced, input_dir / "images" / forced.input_slug, None
    else:
        matching = [(config.task_for_slug(_task_slug(e)), e) for e in entries if config.takes_slug(_task_slug(e))]
        if not matching:
            raise InputError(
                f"inputs.json names interface(s) {short_repr(slugs)}; this algorithm takes one of "
                f"{config.input_slugs} (or, as a DICOM image set, the same with "
                f"'{DICOM_SLUG_SUFFIX}')."
            )
    if len(matching) > 1:
        raise InputError(
            f"inputs.json names {len(matching)} inputs this algorithm could take ({[e['interface']['slug'] for _, e in matching]}); "
            f"expected exactly one of {config.input_slugs}."
        )
    spec, entry = matching[0]
    relative = entry["interface"].get("relative_path") or f"images/{spec.input_slug}"
    if not isinstance(relative, str) or "\x00" in relative:
        raise InputError(
            f"inputs.json relative_path of '{spec.input_slug}' must be a folder path relative to the "
            f"input folder, found {short_repr(relative)}."
        )
    folder = (input_dir / relative).resolve()
    if input_dir.resolve() not in folder.parents:
        raise InputError(f"inputs.json relative_path '{relative}' points outside {input_dir}.")
    image = entry.get("image") if isinstance(entry.get("image"), dict) else {}
    name = image.get("name")
    return spec, folder, name if isinstance(name, str) else None


def _case_from_folders(input_dir: Path, config: EnsembleConfig, task: str | None):
    images_dir = input_dir / "images"
    if task is not None:
        spec = config.task(task)
        return spec, images_dir / spec.input_slug
    present = [config.task_for_slug(slug) for slug in config.input_slugs if (images_dir / slug).is_dir()]
    dicom = [
        config.task_for_slug(slug)
        for slug in config.input_slugs
        if (images_dir / f"{slug}{DICOM_SLUG_SUFFIX}").is_dir()
    ]
    if not present and len(dicom) == 1:
        return dicom[0], images_dir / f"{dicom[0].input_slug}{DICOM_SLUG_SUFFIX}"
    if not present:
        found = sorted(p.name for p in images_dir.iterdir()) if images_dir.is_dir() else []
        raise InputError(
            f"No input image folder found: expected {input_dir}/images/<slug> with slug one of {config.input_slugs}, "
            f"found {found or 'nothing'}."
        )
    if len(present) > 1:
        raise InputError(
            f"Input folders for several tasks found ({[t.input_slug for t in present]}); expected exactly one."
        )
    return present[0], images_dir / present[0].input_slug


def _single_image(folder: Path, task: TaskSpec) -> Path:
    if not folder.is_dir():
        raise InputError(f"No image for '{task.input_slug}': the folder {folder} does not exist.")
    candidates = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    images = [p for p in candidates if is_image_file(p)]
    if not images:
        found = [p.name for p in candidates]
        raise InputError(
            f"No image for '{task.input_slug}' in {folder}: expected one .mha file, found {found or 'an empty folder'}."
        )
    if len(images) > 1:
        raise InputError(
            f"{len(images)} images for '{task.input_slug}' in {folder} ({[p.name for p in images]}); expected exactly one."
        )
    return images[0]


def _holds_dicom_image_set(folder: Path) -> bool:
    """A folder whose files are ``.dcm`` files and no image file (an image set's instances)."""
    if not folder.is_dir():
        return False
    files = [p for p in folder.iterdir() if not p.name.startswith(".")]
    return any(p.name.lower().endswith(".dcm") for p in files) and not any(is_image_file(p) for p in files)


def _dicom_image_set(folder: Path, task: TaskSpec) -> Path:
    """The folder of a DICOM image set, if it holds what the platform writes there: ``<SOPInstanceUID>.dcm`` files."""
    from pantherseg.dicom import is_dicom_file  # the standard library only: no pydicom here

    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    others = [p.name for p in entries if not (p.is_file() and p.name.lower().endswith(".dcm"))]
    if others:
        raise InputError(
            f"DICOM image set for '{task.input_slug}' in {folder}: expected only grand-challenge's "
            f"<SOPInstanceUID>.dcm files, found also {short_repr(others)}."
        )
    if not any(is_dicom_file(p) for p in entries):
        raise InputError(
            f"DICOM image set for '{task.input_slug}' in {folder}: none of its {len(entries)} .dcm "
            f"file(s) is a DICOM file (no DICM marker after the 128-byte preamble)."
        )
    return folder


def check_single_output(output_folder: Path) -> Path:
    """The one mask grand-challenge will upload; more or fewer is an error."""
    files = sorted(p for p in Path(output_folder).iterdir() if p.is_file() and not p.name.startswith("."))
    if len(files) != 1:
        raise OutputError(
            f"{output_folder} must hold exactly one image for grand-challenge, found {[p.name for p in files]}."
        )
    return files[0]


def check_output_folder_free(output_folder: Path, mask_name: str) -> None:
    """Before any network runs: the output folder must hold no image but (at most) this run's own mask.

    grand-challenge fails a job whose output folder ends with two images; finding that out after the
    prediction would waste the budget and leave the new mask beside the old one.
    """
    folder = Path(output_folder)
    if not folder.exists():
        return
    if not folder.is_dir():
        raise OutputError(f"Output folder {folder} is a file; grand-challenge expects a folder there.")
    others = sorted(p.name for p in folder.iterdir() if not p.name.startswith(".") and p.name != mask_name)
    if others:
        raise OutputError(
            f"Output folder {folder} already holds {short_repr(others)}; grand-challenge needs exactly "
            f"one image there at the end: empty it before running."
        )
    if (folder / mask_name).is_dir():
        raise OutputError(f"The mask path {folder / mask_name} is a folder; remove it before running.")
