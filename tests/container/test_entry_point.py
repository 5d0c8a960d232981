"""pantherseg.container.entry_point in process: where the report and the preview go, which weights load."""

from __future__ import annotations

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
