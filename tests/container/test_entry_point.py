"""pantherseg.container.entry_point in process: where the report and the preview go, which weights load."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from pantherseg.container import entry_point
from pantherseg.errors import ModelError


def test_report_path_locally_on_the_platform_and_when_asked():
    local = entry_point.parse_args(["--output", "out"])
    assert entry_point.report_path(local) == Path("out") / "run_report.json"
    platform = entry_point.parse_args([])
    assert platform.output == Path("/output") and entry_point.report_path(platform) is None
    asked = entry_point.parse_args(["--report", "/tmp/r.json"])
    assert entry_point.report_path(asked) == Path("/tmp/r.json")


def test_preview_on_the_platform_without_a_report_is_said_not_silently_dropped(monkeypatch, caplog, tmp_path):
    """On /output there is no report folder to put the preview in: the run goes on and a warning says so."""
    args = entry_point.parse_args(["--preview", "--input", str(tmp_path)])
    calls = {}
    monkeypatch.setattr(entry_point, "report_path", lambda _args: None)

    class Stop(Exception):
        pass

    def fake_check(folder, name):
        calls["checked"] = (folder, name)
        raise Stop  # far enough: the warning comes before any model loads

    from pantherseg.container import grand_challenge

    monkeypatch.setattr(grand_challenge, "check_output_folder_free", fake_check)
    monkeypatch.setattr(grand_challenge, "locate_case", lambda *a, **k: _Case(tmp_path))
    with caplog.at_level(logging.WARNING, logger="pantherseg"), pytest.raises(Stop):
        entry_point.run_case(args)
    assert any("--preview: no preview is written" in r.getMessage() for r in caplog.records)


def test_weights_fall_back_to_the_bundled_ones_and_say_what_is_missing(tmp_path):
    bundled = tmp_path / "bundled"
    (bundled / "m").mkdir(parents=True)
    (bundled / "m" / "plans.json").write_text("{}")
    uploaded = tmp_path / "model"
    assert entry_point._weights(uploaded, bundled) == bundled
    uploaded.mkdir()
    (uploaded / "x").write_text("1")
    assert entry_point._weights(uploaded, bundled) == uploaded
    with pytest.raises(ModelError, match=r"No model: .*empty-model is absent or empty .* upload model\.tar\.gz"):
        entry_point._weights(tmp_path / "empty-model", tmp_path / "no-bundled")


class _Case:
    def __init__(self, root: Path):
        self.task = type("Task", (), {"name": "t1"})()
        self.image = root / "case.mha"
        self.uploaded_name = None

    def output_path(self, output_dir: Path) -> Path:
        return Path(output_dir) / "images" / "pancreatic-tumor-segmentation" / "case.mha"


def test_the_config_a_model_carries_is_preferred_to_the_images_and_the_flag_to_both(tmp_path, caplog):
    image_config, weights = tmp_path / "image-config.json", tmp_path / "model"
    weights.mkdir()
    with caplog.at_level(logging.INFO, logger="pantherseg"):
        assert entry_point.config_path(None, weights, image_config) == image_config
        (weights / "ensemble_config.json").write_text("{}")
        assert entry_point.config_path(None, weights, image_config) == weights / "ensemble_config.json"
        assert entry_point.config_path(tmp_path / "mine.json", weights, image_config) == tmp_path / "mine.json"
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ensemble config:")]
    assert "the image's" in said[0] and "carried by the model (preferred to the image's" in said[1]
    assert said[2].endswith("(--config)")


def test_a_model_tarball_with_its_own_config_runs_without_a_new_image(micro_weights, tmp_path, capsys):
    # micro_weights' folder carries an ensemble_config.json naming its one member; the image's default
    # config names the zoo's folders, which this model folder does not hold: only the carried one can run.
    from conftest import synthetic_image, write_gc_input

    weights, carried = micro_weights
    assert carried == weights / entry_point.MODEL_CONFIG_NAME
    input_dir = write_gc_input(tmp_path, synthetic_image((12, 24, 24)))
    output = tmp_path / "output"
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:  # run() sets up the process's logging (to stderr), as inference.py's process would
        code = entry_point.run(["--input", str(input_dir), "--output", str(output), "--weights", str(weights)])
    finally:
        root.handlers[:], root.level = handlers, level
    stderr = capsys.readouterr().err
    assert code == 0, stderr[-2000:]
    assert f"ensemble config: {carried}, carried by the model" in stderr
    report = json.loads((output / "run_report.json").read_text())
    assert report["config"] == str(carried) and report["members_used"] == ["micro"]
