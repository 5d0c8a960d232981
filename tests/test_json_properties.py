"""Property: no inputs.json or ensemble_config.json, however malformed, ends in a traceback.

Hypothesis draws JSON documents (numbers huge and non-finite, strings with NUL bytes, lists, nested
objects) and valid documents with one value replaced by such a thing; reading them must either work
or raise a one-line PantherError. The default run draws 150 documents of each kind (about 5 s);
``--runslow`` draws 3000.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pantherseg.config import load_config, parse_config
from pantherseg.container.grand_challenge import locate_case
from pantherseg.errors import ConfigError, InputError, PantherError

from model_factory import config_dict, member

KEYS = [
    "version",
    "tile_step_size",
    "use_mirroring",
    "time_budget_s",
    "export_reserve_s",
    "precision",
    "backend",
    "tasks",
    "t1",
    "input_slug",
    "output_slug",
    "tumor_label",
    "members",
    "name",
    "role",
    "model",
    "fold",
    "checkpoint",
    "weight",
    "configuration",
    "interface",
    "slug",
    "relative_path",
    "image",
    "kind",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**30, max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(
        [
            "",
            "\x00",
            "a\x00b",
            "..",
            "/",
            "/etc",
            "../..",
            "images/abdominal-t1-mri",
            "t1",
            "abdominal-t1-mri",
            "auto",
            "checkpoint_final.pth",
            "3d_fullres",
            "all",
        ]
    ),
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), children, max_size=5),
    ),
    max_leaves=20,
)

VALID_CONFIG = config_dict([member("a-f0", "Dataset801_Test/T__P__3d_fullres")])
VALID_INPUTS = [
    {
        "interface": {"slug": "abdominal-t1-mri", "kind": "Image", "relative_path": "images/abdominal-t1-mri"},
        "image": {"name": "scan.mha"},
    }
]


def replace_somewhere(document, data) -> object:
    """``document`` with the value at a drawn path replaced by drawn JSON (or the whole document)."""
    document = copy.deepcopy(document)
    parent, key = None, None
    node = document
    while isinstance(node, (dict, list)) and node and data.draw(st.booleans(), label="descend"):
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        parent, key = node, data.draw(st.sampled_from(keys), label="key")
        node = node[key]
    replacement = data.draw(JSON, label="replacement")
    if parent is None:
        return replacement
    parent[key] = replacement
    return document


def check_config(document) -> None:
    try:
        parse_config(document)
    except ConfigError as error:
        assert "\n" not in str(error) and len(str(error)) < 1000


@pytest.fixture(scope="module")
def input_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("gc") / "input"
    (folder / "images" / "abdominal-t1-mri").mkdir(parents=True)
    (folder / "images" / "abdominal-t1-mri" / "scan.mha").write_bytes(b"not read here")
    return folder


def check_inputs(input_dir: Path, document) -> None:
    text = json.dumps(document, allow_nan=True)
    (input_dir / "inputs.json").write_text(text)
    config = parse_config(VALID_CONFIG)
    for task in (None, "t1"):
        try:
            case = locate_case(input_dir, config, task=task)
        except PantherError as error:
            assert "\n" not in str(error) and len(str(error)) < 1000
        else:
            assert case.image.is_file() and input_dir.resolve() in case.image.resolve().parents


def _property(examples: int):
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


@_property(150)
@given(data=st.data())
def test_config_documents_never_give_a_traceback(data):
    check_config(data.draw(JSON) if data.draw(st.booleans()) else replace_somewhere(VALID_CONFIG, data))


@_property(150)
@given(data=st.data())
def test_inputs_json_documents_never_give_a_traceback(input_dir, data):
    check_inputs(input_dir, data.draw(JSON) if data.draw(st.booleans()) else replace_somewhere(VALID_INPUTS, data))


@pytest.mark.slow
@_property(3000)
@given(data=st.data())
def test_many_more_documents_never_give_a_traceback(input_dir, data):
    check_config(replace_somewhere(VALID_CONFIG, data))
    check_inputs(input_dir, replace_somewhere(VALID_INPUTS, data))


@pytest.mark.parametrize("relative_path", [7, ["images"], "images/\x00abdominal-t1-mri", {"a": 1}, math.inf])
def test_relative_path_that_is_not_a_folder_name_is_one_line(input_dir, relative_path):
    document = copy.deepcopy(VALID_INPUTS)
    document[0]["interface"]["relative_path"] = relative_path
    (input_dir / "inputs.json").write_text(json.dumps(document))
    with pytest.raises(InputError, match="relative_path of 'abdominal-t1-mri' must be a folder path"):
        locate_case(input_dir, parse_config(VALID_CONFIG))


def test_deeply_nested_inputs_json_is_one_line(input_dir):
    (input_dir / "inputs.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(InputError, match="nested too deeply"):
        locate_case(input_dir, parse_config(VALID_CONFIG))


def test_deeply_nested_config_is_one_line(tmp_path):
    path = tmp_path / "ensemble_config.json"
    path.write_text('{"tasks": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config(path)
