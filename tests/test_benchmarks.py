"""The benchmark scripts cannot rot: their tiny configurations run on the CPU here.

benchmarks/bench_gpu.py is meant for a machine with a CUDA GPU (the winners' configuration at the
largest Task 1 size, fp16); its --tiny configuration runs the same code on the CPU in seconds.
"""

from __future__ import annotations

import json
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_gpu  # noqa: E402
import winners  # noqa: E402


def test_gpu_benchmark_tiny_configuration_runs_on_the_cpu(tmp_path, capsys):
    out = tmp_path / "gpu.json"
    assert bench_gpu.main(["--tiny", "--device", "cpu", "--precision", "fp32", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    for label in ("wall time", "network", "achieved", "peak GPU memory"):
        assert label in printed
    result = json.loads(out.read_text())
    assert result["tiles"] == 1 and result["members"] == 1
    assert 0 < result["network_s"] <= result["wall_s"] and 0 < result["network_share"] <= 1
    assert result["achieved_tflops"] == pytest.approx(result["tflop_per_tile"] / result["network_s"])


def test_winners_tile_is_the_published_4_84_tflop():
    plans, dataset = winners.load_winner_plans()
    assert plans["configurations"]["3d_fullres"]["patch_size"] == [192, 192, 192]
    assert winners.tile_flops(plans, len(dataset["labels"])) / 1e12 == pytest.approx(4.84, abs=0.01)


@pytest.mark.parametrize("name,key,peak", [("Tesla T4", "T4", 65.0), ("NVIDIA A10G", "A10G", 125.0),
                                           ("NVIDIA H100 80GB HBM3", "H100", 989.4),
                                           ("NVIDIA H100 PCIe", "H100 PCIe", 756.0),
                                           ("NVIDIA H200", "H200", 989.4), ("NVIDIA L4", None, None)])
def test_card_peaks_are_found_by_device_name(name, key, peak):
    assert bench_gpu.card_peak(name) == (key, peak)


def test_largest_task1_case_is_24_tiles_per_member():
    from pantherseg.engine.sliding_window import count_tiles

    at_1mm = [round(s * sp) for s, sp in zip(winners.LARGEST_T1_ZYX, winners.LARGEST_T1_SPACING_ZYX)]
    assert at_1mm == [264, 322, 393]
    assert count_tiles(at_1mm, (192, 192, 192), 0.5) == winners.TILES_PER_MEMBER == 24
