"""pantherseg.cohort.cases: which files are cases, their output names, and the --num-parts split."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pantherseg.cohort.cases import Case, case_name, list_cases, split_cases
from pantherseg.errors import InputError


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_folders_are_searched_recursively_and_names_encode_subfolders(tmp_path):
    for name in ("z.mha", "a/same.mha", "b/same.nii.gz", "b/c/deep.nrrd", ".hidden.mha", "notes.txt", ".cache/x.mha"):
        touch(tmp_path / name)
    cases = list_cases(tmp_path)
    assert [c.name for c in cases] == ["a__same", "b__c__deep", "b__same", "z"]
    assert {c.name: c.path.relative_to(tmp_path).as_posix() for c in cases}["b__same"] == "b/same.nii.gz"


def dicom(path):
    """A file a quick look takes for DICOM Part 10: 128 bytes of preamble, then DICM."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(128) + b"DICM" + bytes(16))
    return path


def test_a_folder_of_dicom_files_is_one_case_named_by_its_path(tmp_path):
    dicom(tmp_path / "site_a" / "patient7" / "1.2.3.dcm")
    dicom(tmp_path / "site_a" / "patient7" / "1.2.4.dcm")
    touch(tmp_path / "site_a" / "scan.mha")  # an image file beside a DICOM folder is its own case
    dicom(tmp_path / "mixed" / "slice.dcm")
    touch(tmp_path / "mixed" / "mask.mha")  # a folder with image files: those are its cases
    (tmp_path / "empty").mkdir()
    cases = list_cases(tmp_path)
    assert [(c.name, c.path.relative_to(tmp_path).as_posix()) for c in cases] == [
        ("mixed__mask", "mixed/mask.mha"),
        ("site_a__patient7", "site_a/patient7"),
        ("site_a__scan", "site_a/scan.mha"),
    ]
    series = tmp_path / "site_a" / "patient7"
    assert [(c.name, c.path) for c in list_cases(series)] == [("patient7", series)]


def test_the_order_does_not_depend_on_creation_order_or_argument_order(tmp_path):
    for name in ("c.mha", "a.mha", "b.mha"):
        touch(tmp_path / "one" / name)
    touch(tmp_path / "two" / "x" / "d.mha")
    first = list_cases([tmp_path / "two", tmp_path / "one"])
    second = list_cases([tmp_path / "one", tmp_path / "two"])
    assert first == second
    assert [c.name for c in first] == ["a", "b", "c", "x__d"]


def test_a_name_clash_is_refused_naming_both_files(tmp_path):
    touch(tmp_path / "one" / "case.mha")
    touch(tmp_path / "two" / "case.nii.gz")
    with pytest.raises(InputError, match=r"one/case.mha and .*two/case.nii.gz would both write the outputs 'case\.\*'"):
        list_cases([tmp_path / "one", tmp_path / "two"])
    touch(tmp_path / "three" / "a__b.mha")
    touch(tmp_path / "three" / "a" / "b.mha")
    with pytest.raises(InputError, match="a__b.mha"):
        list_cases(tmp_path / "three")


def test_the_output_folder_inside_an_input_folder_is_not_read_and_the_same_folder_is_refused(tmp_path):
    touch(tmp_path / "case.mha")
    touch(tmp_path / "masks" / "case.mha")
    assert [c.name for c in list_cases(tmp_path, exclude=tmp_path / "masks")] == ["case"]
    with pytest.raises(InputError, match="also an input folder"):
        list_cases(tmp_path, exclude=tmp_path)


def test_missing_input_and_empty_folder_are_one_line_errors(tmp_path):
    with pytest.raises(InputError, match="Input not found"):
        list_cases(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="No images in .*empty or its subfolders"):
        list_cases(tmp_path / "empty")


def test_a_file_given_directly_keeps_its_stem(tmp_path):
    path = touch(tmp_path / "deep" / "er" / "scan.nii.gz")
    assert case_name(path, None) == "scan"
    assert list_cases(path) == [Case("scan", path)]


@settings(max_examples=60, deadline=None)
@given(count=st.integers(0, 60), num_parts=st.integers(1, 9))
def test_parts_are_disjoint_cover_the_list_and_are_balanced(count, num_parts):
    cases = [Case(f"c{i:03d}", None) for i in range(count)]
    parts = [split_cases(cases, num_parts, part) for part in range(num_parts)]
    names = [c.name for part in parts for c in part]
    assert sorted(names) == [c.name for c in cases]  # covered exactly once
    assert len(set(names)) == len(names)
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


@pytest.mark.parametrize(
    "num_parts,part_id,message",
    [
        (0, 0, "--num-parts must be at least 1"),
        (3, 3, r"--part-id must be in \[0, 2\]"),
        (2, -1, r"--part-id must be in \[0, 1\]"),
    ],
)
def test_impossible_parts_are_refused(num_parts, part_id, message):
    with pytest.raises(InputError, match=message):
        split_cases([Case("a", None)], num_parts, part_id)
