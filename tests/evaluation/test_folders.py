"""Folder evaluation on tiny .mha / .nii.gz label images written into a temporary folder."""

import csv
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from pantherseg.errors import InputError
from pantherseg.evaluation.folders import CSV_COLUMNS, evaluate, format_table
from pantherseg.evaluation.metrics import case_metrics

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # scipy.ndimage.filters use

SPACING_XYZ = (1.0, 1.0, 3.0)  # SimpleITK order: x, y in-plane 1 mm, z 3 mm slices
SHAPE_ZYX = (8, 10, 12)


def cube(start=(2, 2, 2), size=4, value=1, shape=SHAPE_ZYX):
    labels = np.zeros(shape, dtype=np.uint8)
    labels[tuple(slice(s, s + size) for s in start)] = value
    return labels


def write(folder, name, labels_zyx, spacing_xyz=SPACING_XYZ):
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(labels_zyx)  # numpy (z, y, x) -> image size (x, y, z)
    image.SetSpacing(spacing_xyz)
    sitk.WriteImage(image, str(folder / name))
    return folder / name


@pytest.fixture
def folders(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    write(gt, "case_001.nii.gz", cube())
    write(gt, "case_002.mha", cube())
    write(gt, "case_003.mha", cube())
    write(pred, "case_001.mha", cube(start=(3, 2, 2)))  # shifted one slice (3 mm) along z
    write(pred, "case_002.mha", np.zeros(SHAPE_ZYX, np.uint8))  # empty prediction
    write(pred, "case_004.mha", cube())  # no truth for this one
    (pred / "notes.txt").write_text("not an image")
    return pred, gt


def test_cases_match_by_stem_and_missing_cases_are_listed(folders):
    pred, gt = folders
    result = evaluate(pred, gt)
    (folder,) = result.folders
    assert [c.case for c in folder.cases] == ["case_001", "case_002"]
    assert folder.cases[0].truth_file.name == "case_001.nii.gz"
    assert folder.missing_prediction == ["case_003"]
    assert folder.missing_truth == ["case_004"]
    assert result.leaderboard is None
    table = format_table(result)
    assert "case_003" in table and "case_004" in table


def test_spacing_is_applied_in_array_order(folders):
    pred, gt = folders
    shifted, empty = evaluate(pred, gt).folders[0].cases
    assert shifted.metrics.hd95 == pytest.approx(3.0)  # one 3 mm slice
    assert shifted.metrics.dice == pytest.approx(0.75)
    assert shifted.metrics.truth_volume == pytest.approx(64 * 3.0)
    diagonal = math.sqrt((8 * 3.0) ** 2 + 10**2 + 12**2)
    assert empty.metrics.hd95 == empty.metrics.masd == pytest.approx(diagonal)
    assert (empty.metrics.dice, empty.metrics.surface_dice) == (0.0, 0.0)


def test_xyz_flag_reproduces_the_public_scripts_swapped_spacing(folders):
    pred, gt = folders
    shifted, empty = evaluate(pred, gt, xyz_spacing_order=True).folders[0].cases
    # (x, y, z) spacing against (z, y, x) arrays: axis 0 (z) gets 1 mm, axis 2 (x) gets 3 mm.
    assert shifted.metrics.hd95 == pytest.approx(1.0)
    truth = cube().astype(bool)
    swapped = case_metrics(cube(start=(3, 2, 2)).astype(bool), truth, SPACING_XYZ)
    assert shifted.metrics == swapped
    assert empty.metrics.hd95 == pytest.approx(math.sqrt(8**2 + 10**2 + (12 * 3.0) ** 2))
    assert shifted.metrics.truth_volume == pytest.approx(64 * 3.0)  # volume does not depend on it


def test_label_two_is_binarised_and_mixed_labels_are_refused(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    write(gt, "a.mha", cube())
    write(pred, "a.mha", cube(value=2))
    (case,) = evaluate(pred, gt).folders[0].cases
    assert case.metrics.dice == pytest.approx(1.0)

    mixed = cube(value=2)
    mixed[2, 2, 2] = 1
    bad = write(pred, "a.mha", mixed)
    with pytest.raises(InputError) as info:
        evaluate(pred, gt)
    assert str(bad) in str(info.value) and "{0, 1, 2}" in str(info.value)


def test_truth_with_pancreas_label_is_refused(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    labels = cube(value=2, size=6, start=(1, 1, 1))
    labels[2:4, 2:4, 2:4] = 1  # tumour inside pancreas: a training label, not a tumour mask
    write(gt, "a.mha", labels)
    write(pred, "a.mha", cube())
    with pytest.raises(InputError, match="gt/a.mha"):
        evaluate(pred, gt)


def test_shape_mismatch_names_the_case(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    write(gt, "case_9.mha", cube())
    write(pred, "case_9.mha", cube(shape=(8, 10, 11)))
    with pytest.raises(InputError, match="case case_9: .*shape"):
        evaluate(pred, gt)


def test_spacing_mismatch_names_the_case(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    write(gt, "case_9.mha", cube())
    write(pred, "case_9.mha", cube(), spacing_xyz=(1.0, 1.0, 2.5))
    with pytest.raises(InputError, match="case case_9: .*spacing"):
        evaluate(pred, gt)


def test_folder_errors(tmp_path):
    write(tmp_path / "gt", "a.mha", cube())
    write(tmp_path / "pred", "b.mha", cube())
    with pytest.raises(InputError, match="no folder"):
        evaluate(tmp_path / "nowhere", tmp_path / "gt")
    with pytest.raises(InputError, match="no case in"):
        evaluate(tmp_path / "pred", tmp_path / "gt")
    write(tmp_path / "gt", "a.nii.gz", cube())
    with pytest.raises(InputError, match="appears twice"):
        evaluate(tmp_path / "pred", tmp_path / "gt")


def test_leaderboard_json_and_csv(folders, tmp_path):
    pred, gt = folders
    perfect = tmp_path / "perfect"
    write(perfect, "case_001.mha", cube())
    write(perfect, "case_002.mha", cube())
    json_path, csv_path = tmp_path / "out.json", tmp_path / "out.csv"
    result = evaluate([pred, perfect], gt, json_path=json_path, csv_path=csv_path)

    first, second = result.leaderboard
    assert first.name == str(perfect) and first.score == 1.0 and first.rank == 1
    assert second.name == str(pred) and second.score == 2.0 and second.rank == 2

    saved = json.loads(json_path.read_text())
    assert [f["prediction_folder"] for f in saved["folders"]] == [str(pred), str(perfect)]
    assert saved["folders"][0]["missing_prediction"] == ["case_003"]
    assert saved["folders"][0]["cases"][1]["rule"] == "uniform prediction"
    assert saved["folders"][1]["aggregate"]["dice"] == 1.0
    assert [e["name"] for e in saved["leaderboard"]] == [str(perfect), str(pred)]

    with csv_path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [(r["prediction_folder"] == str(pred), r["case"], r["status"]) for r in rows] == [
        (True, "case_001", "scored"),
        (True, "case_002", "scored"),
        (True, "case_003", "missing_prediction"),
        (True, "case_004", "missing_truth"),
        (False, "case_001", "scored"),
        (False, "case_002", "scored"),
        (False, "case_003", "missing_prediction"),
    ]
    assert float(rows[0]["hd95_mm"]) == pytest.approx(3.0)

    table = format_table(result)
    assert "Leaderboard" in table and "different sets of cases" not in table


def test_identical_folders_tie(folders, tmp_path):
    pred, gt = folders
    twin = tmp_path / "twin"
    twin.mkdir()
    for path in pred.glob("*.mha"):
        (twin / path.name).write_bytes(path.read_bytes())
    board = evaluate([pred, twin], gt).leaderboard
    assert [(e.rank, e.score) for e in board] == [(1, 1.0), (1, 1.0)]


# --- the header checks of ``segment`` (pantherseg.io.images.checked_reader) ----------------------------


def test_a_data_file_outside_the_folder_is_never_read(tmp_path):
    """An .mhd naming a file outside its folder: refused before ITK opens it, its bytes never printed."""
    secret = tmp_path / "secret.raw"
    secret.write_bytes(b"\x01" * (8 * 10 * 12))
    pred = tmp_path / "pred"
    write(tmp_path / "gt", "case_001.mha", cube())
    pred.mkdir()
    (pred / "case_001.mhd").write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 12 10 8\nElementType = MET_UCHAR\n"
        "ElementSpacing = 1 1 3\nElementDataFile = ../secret.raw\n"
    )
    with pytest.raises(InputError, match="outside the image's folder"):
        evaluate(pred, tmp_path / "gt")


def test_a_zlib_bomb_is_refused_before_decompressing(tmp_path, monkeypatch):
    import zlib

    executed = []
    monkeypatch.setattr(sitk.ImageFileReader, "Execute", lambda self: executed.append(1))
    payload = zlib.compress(bytes(1 << 20), 9)
    pred = tmp_path / "pred"
    pred.mkdir()
    write(tmp_path / "gt", "case_001.mha", cube())
    (pred / "case_001.mha").write_bytes(
        b"ObjectType = Image\nNDims = 3\nBinaryData = True\nCompressedData = True\n"
        + f"CompressedDataSize = {len(payload)}\nDimSize = 1100 1100 1100\nElementType = MET_UCHAR\n".encode()
        + b"ElementSpacing = 1 1 3\nElementDataFile = LOCAL\n"
        + payload
    )
    from pantherseg.errors import ResourceError

    with pytest.raises(ResourceError, match="before reading or decompressing"):
        evaluate(pred, tmp_path / "gt")
    assert executed == []


@pytest.mark.parametrize("spacing", [(1e300, 1.0, 3.0), (1.0, 1e-300, 3.0)])
def test_absurd_spacing_is_one_line(tmp_path, spacing):
    write(tmp_path / "gt", "case_001.mha", cube(), spacing_xyz=spacing)
    write(tmp_path / "pred", "case_001.mha", cube(), spacing_xyz=spacing)
    with pytest.raises(InputError, match="outside") as caught:
        evaluate(tmp_path / "pred", tmp_path / "gt")
    message = str(caught.value)
    assert "\n" not in message and ("1e+300" in message or "1e-300" in message)


def test_a_truncated_prediction_is_refused(tmp_path):
    write(tmp_path / "gt", "case_001.nii.gz", cube())
    path = write(tmp_path / "pred", "case_001.nii", (np.arange(960).reshape(SHAPE_ZYX) % 2).astype(np.uint8))
    path.write_bytes(path.read_bytes()[:-300])
    with pytest.raises(InputError, match="truncated"):
        evaluate(tmp_path / "pred", tmp_path / "gt")
