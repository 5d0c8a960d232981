"""ensemble_config.json parsing: every mistake is refused with the key path and the value found."""

from __future__ import annotations

import copy
import json

import pytest

from pantherseg.config import load_config, parse_config
from pantherseg.errors import ConfigError

from model_factory import config_dict, member

BASE = config_dict([member("a", "D/T__P__3d_fullres"), member("b", "D/T__P__3d_lowres", fold="all", weight=0.5)])


def test_valid_config_is_read_with_defaults(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(BASE))
    config = load_config(path)
    task = config.task("t1")
    assert config.tile_step_size == 0.5 and config.use_mirroring is False and config.time_budget_s == 300
    assert [m.name for m in task.members] == ["a", "b"]
    assert task.members[0].configuration == "3d_fullres"  # from the folder name Trainer__Plans__Config
    assert task.members[1].configuration == "3d_lowres" and task.members[1].fold == "all"
    assert config.task_for_slug("abdominal-t1-mri") is task


def _mutated(change):
    raw = copy.deepcopy(BASE)
    change(raw)
    return raw


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda c: c.update(version=2), "'version' must be one of [1], found 2"),
        (lambda c: c.update(tile_step_size=0), "'tile_step_size' must be a number in [0.1, 1]"),
        (lambda c: c.update(tile_step_size=1e-6), "'tile_step_size' must be a number in [0.1, 1]"),
        (lambda c: c.update(version=True), "'version' must be one of [1], found True"),
        (lambda c: c.update(version=1.0), "'version' must be one of [1], found 1.0"),
        (lambda c: c["tasks"]["t1"].update(output_slug="../../etc"), "'tasks.t1.output_slug' must be a slug"),
        (lambda c: c["tasks"]["t1"].update(input_slug="a\x00b"), "'tasks.t1.input_slug' must be a slug"),
        (lambda c: c["tasks"]["t1"]["members"][0].update(name="../x"), "'tasks.t1.members[0].name' must be a name"),
        (lambda c: c["tasks"]["t1"]["members"][0].update(model="a\x00b"), "'tasks.t1.members[0].model' must be"),
        (lambda c: c["tasks"]["t1"]["members"][0].update(name="x" * 10000), "..."),
        (lambda c: c.update(use_mirroring="no"), "'use_mirroring' must be true or false"),
        (lambda c: c.update(time_budget_s=-1), "'time_budget_s' must be a positive number"),
        (lambda c: c.update(extra=1), "unknown key(s) ['extra']"),
        (lambda c: c["tasks"]["t1"]["members"][0].update(weight=0), "'tasks.t1.members[0].weight' must be a positive"),
        (lambda c: c["tasks"]["t1"]["members"][0].update(weight=-2), "must be a positive number, found -2"),
        (lambda c: c["tasks"]["t1"]["members"][0].update(fold=-1), "'tasks.t1.members[0].fold' must be"),
        (
            lambda c: c["tasks"]["t1"]["members"][0].update(role=3),
            "'tasks.t1.members[0].role' must be a short free-text",
        ),
        (lambda c: c["tasks"]["t1"]["members"][0].update(model="/abs/path"), "relative to the weights root"),
        (lambda c: c["tasks"]["t1"]["members"][0].update(model="../outside"), "relative to the weights root"),
        (lambda c: c["tasks"]["t1"]["members"][0].update(checkpoint="model.ckpt"), "checkpoint file name"),
        (lambda c: c["tasks"]["t1"]["members"][1].update(name="a"), "member names ['a'] are used twice"),
        (lambda c: c["tasks"]["t1"].update(members=[]), "'tasks.t1.members' must be a non-empty list"),
        (lambda c: c["tasks"]["t1"].update(tumor_label=0), "'tasks.t1.tumor_label' must be a positive integer"),
        (lambda c: c.update(tasks={}), "'tasks' must be a non-empty object"),
        (lambda c: c.update(quality_review_below=1.5), "'quality_review_below' must be a number in [0, 1]"),
        (lambda c: c.update(quality_review_below="high"), "'quality_review_below' must be a finite number"),
    ],
)
def test_mistakes_are_named(change, message):
    with pytest.raises(ConfigError) as error:
        parse_config(_mutated(change))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_unknown_task_and_slug_are_named(tmp_path):
    config = parse_config(BASE)
    with pytest.raises(ConfigError, match=r"Task 't3' is not in the ensemble config.*\['t1'\]"):
        config.task("t3")
    with pytest.raises(ConfigError, match="No task takes the input interface 'ct-scan'"):
        config.task_for_slug("ct-scan")


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{ nope")
    with pytest.raises(ConfigError, match="not valid JSON.*line 1"):
        load_config(bad)


@pytest.mark.parametrize(
    "text, reason",
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"version": ' + "9" * 5000 + "}", "cannot be decoded"),
        (b"\xff\xfe{}", "not UTF-8 text"),
    ],
)
def test_undecodable_config_files_are_one_line(tmp_path, text, reason):
    path = tmp_path / "ensemble_config.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert reason in str(error.value) and "\n" not in str(error.value) and len(str(error.value)) < 400


def test_roles_are_free_text():
    """The paper's three roles are examples: a user's own ensemble may name other experts."""
    raw = config_dict(
        [member("a", "m/T__P__3d_fullres", role="pancreas-head expert"), member("b", "m/T__P__3d_fullres")]
    )
    config = parse_config(raw)
    assert [m.role for m in config.task("t1").members] == ["pancreas-head expert", "all-rounder"]
    for bad in ("", "  ", "x" * 129, "line\nbreak", None):
        raw["tasks"]["t1"]["members"][0]["role"] = bad
        with pytest.raises(ConfigError, match=r"members\[0\]\.role' must be a short free-text"):
            parse_config(raw)


def test_to_dict_gives_the_config_back():
    raw = config_dict([member("a", "m/T__P__3d_fullres", weight=2.0), member("b", "m/T__P__2d", fold="all")])
    raw["tasks"]["t1"]["members"][1]["configuration"] = "3d_lowres"
    config = parse_config(raw)
    again = config.to_dict()
    assert parse_config(again) == config
    assert "configuration" not in again["tasks"]["t1"]["members"][0]  # the folder name gives it
    assert again["tasks"]["t1"]["members"][1]["configuration"] == "3d_lowres"
    assert json.loads(json.dumps(again)) == again
