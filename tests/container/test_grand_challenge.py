"""Finding the one input of a grand-challenge job and naming the one output."""

from __future__ import annotations

import json

import pytest

from conftest import synthetic_image, write_gc_input
from model_factory import config_dict, member
from pantherseg.config import parse_config
from pantherseg.container.grand_challenge import check_single_output, locate_case
from pantherseg.errors import InputError

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
    entries.append({"interface": {"slug": "clinical-information", "relative_path": "clinical-information.json"},
                    "value": {"age": 61}})
    (input_dir / "inputs.json").write_text(json.dumps(entries))
    assert locate_case(input_dir, CONFIG).task.name == "t1"


@pytest.mark.parametrize("setup,message", [
    (lambda d: None, None),
    (lambda d: (d / "inputs.json").write_text("[{"), "is not valid JSON"),
    (lambda d: (d / "inputs.json").write_text('{"slug": 1}'), "must be a list of objects with interface.slug"),
    (lambda d: (d / "inputs.json").write_text('[{"interface": {"slug": "ct-scan"}}]'),
     "names interface(s) ['ct-scan']; this algorithm takes one of ['abdominal-t1-mri', 'abdominal-t2-mri']"),
    (lambda d: (d / "inputs.json").write_text(
        '[{"interface": {"slug": "abdominal-t1-mri", "relative_path": "../../etc"}}]'), "points outside"),
])
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
