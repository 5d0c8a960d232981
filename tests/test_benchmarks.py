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

import bench_cpu_tile  # noqa: E402
import bench_gpu  # noqa: E402
import bench_gpu_tile  # noqa: E402
import winners  # noqa: E402


def test_gpu_benchmark_tiny_configuration_runs_on_the_cpu(tmp_path, capsys):
    out = tmp_path / "gpu.json"
    assert (
        bench_gpu.main(
            [
                "--tiny",
                "--device",
                "cpu",
                "--precision",
                "fp32",
                "--reference",
                "--cpus",
                "1",
                "--preprocessing",
                "on",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    for label in (
        "wall time",
        "network",
        "achieved",
        "peak GPU memory",
        "nnU-Net's route",
        "preprocess ",
        "sliding window",
        "of the bare network pass's rate",
        "idle between tiles",
    ):
        assert label in printed
    result = json.loads(out.read_text())
    assert result["tiles"] == 1 and result["members"] == 1
    assert 0 < result["network_s"] <= result["wall_s"] and 0 < result["network_share"] <= 1
    assert result["achieved_tflops"] == pytest.approx(result["tflop_per_tile"] / result["network_s"])
    # Same network, same fp32 maths on the CPU: nnU-Net's route and the engine give the same mask.
    assert result["reference"]["wall_s"] > 0 and result["reference"]["voxel_agreement"] > 0.999
    assert result["pinned_cpus"] and len(result["pinned_cpus"]) == 1
    assert result["bare_s_per_tile"] > 0 and result["window_rate_of_bare"] == pytest.approx(
        result["bare_s_per_tile"] * result["tiles"] / result["network_s"]
    )
    assert set(result["stage_shares"]) >= {"preprocess", "network", "export"} and result["batches_busy_s"] > 0


def test_gpu_benchmark_cpu_pinning_refuses_more_cpus_than_allowed():
    import os

    before = os.sched_getaffinity(0)
    with pytest.raises(SystemExit, match="only"):
        bench_gpu.pin_cpus(len(before) + 1)
    assert os.sched_getaffinity(0) == before


def test_gpu_tile_benchmark_tiny_configuration_runs_on_the_cpu(capsys):
    # --compile is left out here: inductor's first compile takes minutes on a small CPU (measured: 139 s).
    rows = bench_gpu_tile.main(["--tiny", "--device", "cpu", "--cuda-graphs"])
    graphs = [variant[0] for variant in bench_gpu_tile.OPT_IN_VARIANTS["cuda-graphs"]]
    assert [row["variant"] for row in rows] == [variant[0] for variant in bench_gpu_tile.VARIANTS] + graphs
    assert all(row["applicable"] is False for row in rows[-len(graphs) :])  # CUDA graphs need CUDA
    rows = rows[: -len(graphs)]
    assert rows[0]["speed_up"] == 1.0 and all(row["ms_per_tile"] > 0 for row in rows)
    assert "ms per tile" in capsys.readouterr().out


def test_cpu_tile_benchmark_tiny_configuration_names_the_cpu(tmp_path, capsys):
    pytest.importorskip("openvino")
    figures = bench_cpu_tile.main(["--tiny", "--alternatives", "--json", str(tmp_path / "tile.json")])
    assert {"torch fp32", "OpenVINO fp32", "OpenVINO fp32, 2 tiles per inference"} <= set(figures["seconds_per_tile"])
    assert all(seconds > 0 for seconds in figures["seconds_per_tile"].values())
    assert figures["cpu"]["model"] and figures["cpu"]["threads"] >= 1
    printed = capsys.readouterr().out
    assert "CPU: " in printed and json.loads((tmp_path / "tile.json").read_text())["patch"]
    assert "fp32 peak" in printed and "% of peak" in printed
    peak = figures["fp32_peak"]
    assert peak["gflops"] == pytest.approx(
        peak["lanes"] * 2 * peak["fma_units_per_core"] * peak["clock_ghz"] * peak["threads"]
    )
    assert figures["gflops"]["torch fp32"] == pytest.approx(
        figures["gflop_per_tile"] / figures["seconds_per_tile"]["torch fp32"]
    )


def test_machine_reads_model_and_vector_flags(tmp_path):
    import machine

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Example CPU 9000\nflags\t\t: fpu avx2 avx512f avx512_bf16\n")
    described = machine.describe_cpu(cpuinfo)
    assert described["model"] == "Example CPU 9000"
    assert described["vector_flags"] == ["avx2", "avx512f", "avx512_bf16"]
    assert machine.cpu_model(tmp_path / "missing") == "unknown CPU"


@pytest.mark.parametrize("flags,lanes", [("fma avx2 avx512f", 16), ("fma avx2", 8), ("avx2", 4), ("sse4_2", 4)])
def test_fp32_peak_from_vector_width_clock_and_threads(tmp_path, flags, lanes):
    import machine

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        f"processor\t: 0\ncpu MHz\t\t: 2000.000\nflags\t\t: {flags}\n"
        f"processor\t: 1\ncpu MHz\t\t: 2500.000\nflags\t\t: {flags}\n"
    )
    peak = machine.fp32_peak(cpuinfo, threads=4)
    assert peak["lanes"] == lanes and peak["clock_ghz"] == 2.5
    assert peak["gflops"] == pytest.approx(lanes * 2 * 2 * 2.5 * 4)
    assert machine.fp32_peak(tmp_path / "missing", threads=1)["gflops"] is None


def test_winners_tile_is_the_published_4_84_tflop():
    plans, dataset = winners.load_winner_plans()
    assert plans["configurations"]["3d_fullres"]["patch_size"] == [192, 192, 192]
    assert winners.tile_flops(plans, len(dataset["labels"])) / 1e12 == pytest.approx(4.84, abs=0.01)


@pytest.mark.parametrize(
    "name,key,peak",
    [
        ("Tesla T4", "T4", 65.0),
        ("NVIDIA A10G", "A10G", 125.0),
        ("NVIDIA H100 80GB HBM3", "H100", 989.4),
        ("NVIDIA H100 PCIe", "H100 PCIe", 756.0),
        ("NVIDIA H200", "H200", 989.4),
        ("NVIDIA L4", None, None),
    ],
)
def test_card_peaks_are_found_by_device_name(name, key, peak):
    assert bench_gpu.card_peak(name) == (key, peak)


def test_largest_task1_case_is_24_tiles_per_member():
    from pantherseg.engine.sliding_window import count_tiles

    at_1mm = [round(s * sp) for s, sp in zip(winners.LARGEST_T1_ZYX, winners.LARGEST_T1_SPACING_ZYX)]
    assert at_1mm == [264, 322, 393]
    assert count_tiles(at_1mm, (192, 192, 192), 0.5) == winners.TILES_PER_MEMBER == 24
