"""pantherseg.options: the run flags are declared once and mapped once, into RunOptions."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytest

from pantherseg.options import RunOptions, add_run_options


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_run_options(parser)
    return parser.parse_args(list(argv))


def test_from_args_maps_the_shared_flags():
    options = RunOptions.from_args(parse("--device", "cpu", "--time-budget", "120", "--tile-batch-size", "2",
                                         "--precision", "bf16", "--backend", "torch", "--config", "c.json"),
                                   task="t2", report_dir=Path("out"))
    assert (options.device, options.time_budget_s, options.tile_batch_size, options.precision, options.backend,
            options.config, options.task, options.report_dir) == ("cpu", 120.0, 2, "bf16", "torch", Path("c.json"),
                                                                  "t2", Path("out"))
    assert options.budget_from_process_start  # both entry points count from process start
    assert RunOptions.from_args(parse()).time_budget_s is None  # the config's
    assert math.isinf(RunOptions.from_args(parse("--time-budget", "0")).time_budget_s)  # 0: no deadline


def test_library_defaults_do_not_count_from_process_start():
    assert RunOptions().budget_from_process_start is False and RunOptions().stop_on_error is True


def test_an_unknown_option_is_a_type_error_naming_it(tmp_path):
    with pytest.raises(TypeError, match=r"unknown run option\(s\) \['devcie'\]"):
        RunOptions().but(devcie="cpu")
    from pantherseg import segment

    with pytest.raises(TypeError, match="devcie"):
        segment(tmp_path, output_dir=tmp_path / "out", devcie="cpu")
