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
    options = RunOptions.from_args(
        parse(
            "--device",
            "cpu",
            "--time-budget",
            "120",
            "--tile-batch-size",
            "2",
            "--precision",
            "bf16",
            "--backend",
            "torch",
            "--config",
            "c.json",
        ),
        task="t2",
        report_dir=Path("out"),
    )
    assert (
        options.device,
        options.time_budget_s,
        options.tile_batch_size,
        options.precision,
        options.backend,
        options.config,
        options.task,
        options.report_dir,
    ) == ("cpu", 120.0, 2, "bf16", "torch", Path("c.json"), "t2", Path("out"))
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


# --- issue 20: every numeric flag is range-checked (a usage error, exit 2, one line) --------------------

BAD_FLAGS = [
    ["--tile-batch-size", "0"],
    ["--tile-batch-size", "-3"],
    ["--tile-batch-size", "1e3"],
    ["--time-budget", "-1"],
    ["--time-budget", "nan"],
    ["--time-budget", "inf"],
    ["--num-parts", "0"],
    ["--num-parts", "-2"],
    ["--part-id", "-1"],
    ["--ray-workers", "0"],
    ["--ray-cpus-per-worker", "0"],
    ["--ray-cpus-per-worker", "nan"],
    ["--ray-gpus-per-worker", "-1"],
    ["--max-retries", "-1"],
]


@pytest.mark.parametrize("flag", BAD_FLAGS, ids=[" ".join(f) for f in BAD_FLAGS])
def test_out_of_range_flags_are_usage_errors(flag, capsys, tmp_path):
    from pantherseg.cli import build_parser

    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(["predict", "-i", str(tmp_path), "-o", str(tmp_path / "o"), *flag])
    assert caught.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert flag[0] in last and "must be" in last and repr(flag[1]) in last


def test_part_id_beyond_num_parts_is_one_line(tmp_path, capsys):
    from pantherseg.cli import main

    code = main(["predict", "-i", str(tmp_path), "-o", str(tmp_path / "o"), "--num-parts", "2", "--part-id", "2"])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "pantherseg error: --part-id must be in [0, 1] for --num-parts 2, found 2."
    )


@pytest.mark.parametrize(
    "field, value",
    [
        ("tile_batch_size", 0),
        ("tile_batch_size", True),
        ("time_budget_s", -1.0),
        ("time_budget_s", float("nan")),
        ("time_budget_s", 0),
    ],
)
def test_run_options_refuse_what_the_flags_refuse(field, value):
    from pantherseg.errors import ConfigError
    from pantherseg.options import RunOptions

    with pytest.raises(ConfigError, match=field):
        RunOptions(**{field: value})
