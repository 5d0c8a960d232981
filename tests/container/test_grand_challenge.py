"""Finding the one input of a grand-challenge job and naming the one output."""

from __future__ import annotations

import json

import pytest

from pantherseg.config import parse_config
from pantherseg.container.grand_challenge import check_single_output, locate_case
from pantherseg.errors import InputError

from conftest import synthetic_image, write_gc_input
from model_factory import config_dict, member

CONFIG = parse_config(config_dict([member("a", "M/T__P__3d_fullres")], [member("b", "M/T__P__3d_fullres")]))
IMAGE = synthetic_image(shape_zyx=(8, 8, 8))


@pytest.mark.parametrize("slug,task", [("abdominal-t1-mri", "t1"), ("abdominal-t2-mri", "t2")])
def test_slug_picks_the_task_and_output_keeps_the_file_stem(slug, task, tmp_path):
    input_dir = write_gc_input(tmp_path, IMAGE, slug=slug, file_name="b2f1-uuid.mha", uploaded_name="scan 1.nii.gz")
    case = locate_case(input_dir, CONFIG)
    assert case.task.name == task and case.uploaded_name == "scan 1.nii.gz"
    assert case.output_path(tmp_path / "out") == tmp_path / "out/images/pancreatic-tumor-segmentation/b2f1-uuid.mha"


def test_folders_are_used_when_inputs_json_is_absent(tmp_path):
    input_dir = write_gc_input(tmp_path, IMAGE, slug="abdominal-t2-mri", inputs_json=False)
    assert locate_case(input_dir, CONFIG).task.name == "t2"


def test_task_flag_overrides_the_slug(tmp_path):
    input_dir = write_gc_input(tmp_path, IMAGE, slug="abdominal-t1-mri", inputs_json=False)
    (input_dir / "images" / "abdominal-t1-mri").rename(input_dir / "images" / "abdominal-t2-mri")
    assert locate_case(input_dir, CONFIG, task="t2").task.name == "t2"


def test_inputs_json_with_extra_non_image_inputs_is_fine(tmp_path):
    input_dir = write_gc_input(tmp_path, IMAGE)
    entries = json.loads((input_dir / "inputs.json").read_text())
    entries.append(
        {
            "interface": {"slug": "clinical-information", "relative_path": "clinical-information.json"},
            "value": {"age": 61},
        }
    )
    (input_dir / "inputs.json").write_text(json.dumps(entries))
    assert locate_case(input_dir, CONFIG).task.name == "t1"


@pytest.mark.parametrize(
    "setup,message",
    [
        (lambda d: None, None),
        (lambda d: (d / "inputs.json").write_text("[{"), "is not valid JSON"),
        (lambda d: (d / "inputs.json").write_text('{"slug": 1}'), "must hold a JSON list, found dict"),
        (lambda d: (d / "inputs.json").write_text('[{"slug": 1}]'), "must be a list of objects with interface.slug"),
        (
            lambda d: (d / "inputs.json").write_text('[{"interface": {"slug": "ct-scan"}}]'),
            "names interface(s) ['ct-scan']; this algorithm takes one of ['abdominal-t1-mri', 'abdominal-t2-mri']",
        ),
        (
            lambda d: (d / "inputs.json").write_text(
                '[{"interface": {"slug": "abdominal-t1-mri", "relative_path": "../../etc"}}]'
            ),
            "points outside",
        ),
    ],
)
def test_unusable_inputs_json(setup, message, tmp_path):
    input_dir = write_gc_input(tmp_path, IMAGE)
    setup(input_dir)
    if message is None:
        locate_case(input_dir, CONFIG)
        return
    with pytest.raises(InputError) as error:
        locate_case(input_dir, CONFIG)
    assert message in str(error.value)


def test_missing_input_folder_and_non_image_files(tmp_path):
    with pytest.raises(InputError, match="Input folder not found"):
        locate_case(tmp_path / "nope", CONFIG)
    input_dir = write_gc_input(tmp_path, IMAGE, inputs_json=False)
    folder = input_dir / "images" / "abdominal-t1-mri"
    next(folder.iterdir()).unlink()
    (folder / "notes.txt").write_text("x")
    with pytest.raises(InputError, match=r"expected one .mha file, found \['notes.txt'\]"):
        locate_case(input_dir, CONFIG)


def test_no_task_folder_is_named(tmp_path):
    (tmp_path / "input" / "images" / "ct").mkdir(parents=True)
    with pytest.raises(InputError, match=r"found \['ct'\]"):
        locate_case(tmp_path / "input", CONFIG)


def test_single_output_check(tmp_path):
    (tmp_path / "a.mha").write_bytes(b"x")
    assert check_single_output(tmp_path) == tmp_path / "a.mha"
    (tmp_path / "b.mha").write_bytes(b"x")
    with pytest.raises(Exception, match="exactly one image"):
        check_single_output(tmp_path)


# --- the "DICOM image set" socket ---------------------------------------------------------------------
# grand-challenge (components/backends/base.py, _get_civ_provisioning_tasks) copies every instance of the
# image set to <relative_path>/<SOPInstanceUID>.dcm, and inputs.json names the socket with its kind's label.


def _dicom_image_set(
    tmp_path,
    image,
    *,
    slug="abdominal-t1-mri-dicom",
    relative_path="images/mri-dicom",
    inputs_json=True,
    transfer_syntax=None,
):
    """Lay ``image`` out as a DICOM image set socket: the platform's layout and inputs.json entry."""
    pydicom = pytest.importorskip("pydicom")
    from dicom_factory import write_series

    input_dir = tmp_path / "input"
    folder = input_dir / relative_path
    for path in write_series(image, tmp_path / "exported", transfer_syntax=transfer_syntax):
        uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
        folder.mkdir(parents=True, exist_ok=True)
        path.rename(folder / f"{uid}.dcm")
    if inputs_json:
        (input_dir / "inputs.json").write_text(
            json.dumps(
                [
                    {
                        "interface": {
                            "title": "Abdominal T1 MRI (DICOM)",
                            "slug": slug,
                            "kind": "DICOM Image Set",
                            "super_kind": "Image",
                            "relative_path": relative_path,
                            "pk": 912,
                        },
                        "image": {"pk": "5c7c1a52", "name": "patient42 MR"},
                        "value": None,
                        "file": None,
                        "pk": 77,
                    }
                ]
            )
        )
    return input_dir, folder


@pytest.mark.parametrize("slug,task", [("abdominal-t1-mri-dicom", "t1"), ("abdominal-t2-mri-dicom", "t2")])
def test_a_dicom_image_set_socket_is_the_folder_of_its_instances(slug, task, tmp_path):
    input_dir, folder = _dicom_image_set(tmp_path, IMAGE, slug=slug)
    case = locate_case(input_dir, CONFIG)
    assert (case.task.name, case.image, case.dicom, case.uploaded_name) == (task, folder, True, "patient42 MR")
    assert all(p.suffix == ".dcm" for p in folder.iterdir()) and len(list(folder.iterdir())) == 8
    assert case.output_path(tmp_path / "out").parent == tmp_path / "out/images/pancreatic-tumor-segmentation"


def test_a_dicom_image_set_is_found_without_inputs_json_and_with_a_forced_task(tmp_path):
    input_dir, folder = _dicom_image_set(
        tmp_path, IMAGE, relative_path="images/abdominal-t2-mri-dicom", inputs_json=False
    )
    assert locate_case(input_dir, CONFIG).task.name == "t2" and locate_case(input_dir, CONFIG).dicom
    other, _ = _dicom_image_set(tmp_path / "other", IMAGE, slug="site-specific-mri")
    with pytest.raises(InputError, match=r"names interface\(s\) \['site-specific-mri'\].*'-dicom'"):
        locate_case(other, CONFIG)
    forced = locate_case(other, CONFIG, task="t2")  # a socket named by the site: --task says which task
    assert (forced.task.name, forced.image, forced.dicom) == ("t2", other / "images" / "mri-dicom", True)


@pytest.mark.parametrize(
    "spoil,message",
    [
        (
            lambda folder: (folder / "notes.txt").write_text("x"),
            r"expected only grand-challenge's <SOPInstanceUID>.dcm",
        ),
        (lambda folder: [p.write_bytes(b"not dicom") for p in folder.iterdir()], "none of its 8 .dcm file"),
    ],
)
def test_a_dicom_image_set_that_is_not_the_platforms_layout_is_refused_in_one_line(spoil, message, tmp_path):
    input_dir, folder = _dicom_image_set(tmp_path, IMAGE)
    spoil(folder)
    with pytest.raises(InputError, match=message) as caught:
        locate_case(input_dir, CONFIG)
    assert "\n" not in str(caught.value)


# HealthImaging, where grand-challenge keeps image sets, serves most lossless uploads as HTJ2K Lossless RPCL.
@pytest.mark.parametrize("transfer_syntax", [None, "1.2.840.10008.1.2.4.202"], ids=["uncompressed", "htj2k"])
def test_inference_on_a_dicom_image_set_writes_the_same_mask_as_on_the_mha(
    tiny_weights, tiny_config, tmp_path, transfer_syntax
):
    """inference.py's entry point, once with the DICOM image set socket and once with the same image as the usual
    .mha socket: one mask each, in the output slug's folder, equal voxel for voxel with the same geometry."""
    pytest.importorskip("highdicom")
    if transfer_syntax is not None:
        pytest.importorskip("imagecodecs", reason="HTJ2K test series are encoded with imagecodecs (OpenJPH)")
    import numpy as np
    import SimpleITK as sitk

    from pantherseg.container.entry_point import run

    from dicom_factory import orient, stored_image

    image = orient(synthetic_image(shape_zyx=(10, 32, 40), seed=1), "oblique")
    dicom_input, _ = _dicom_image_set(tmp_path / "dicom", image, transfer_syntax=transfer_syntax)
    mha_input = write_gc_input(tmp_path / "mha", stored_image(image))
    masks = []
    for input_dir, out in ((dicom_input, tmp_path / "out-dicom"), (mha_input, tmp_path / "out-mha")):
        assert (
            run(
                [
                    "--input",
                    str(input_dir),
                    "--output",
                    str(out),
                    "--weights",
                    str(tiny_weights),
                    "--config",
                    str(tiny_config),
                    "--device",
                    "cpu",
                    "-q",
                ]
            )
            == 0
        )
        [mask] = (out / "images" / "pancreatic-tumor-segmentation").iterdir()
        masks.append(sitk.ReadImage(str(mask)))
    from_dicom, from_mha = (sitk.GetArrayFromImage(m) for m in masks)
    assert 0 < from_dicom.sum() < from_dicom.size and np.array_equal(from_dicom, from_mha)
    for get in ("GetOrigin", "GetSpacing", "GetDirection"):
        assert np.allclose(getattr(masks[0], get)(), getattr(masks[1], get)(), atol=1e-5)
    report = json.loads((tmp_path / "out-dicom" / "run_report.json").read_text())
    assert report["task"] == "t1" and report["input"]["path"] == str(dicom_input / "images" / "mri-dicom")
