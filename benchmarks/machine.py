"""What a CPU benchmark ran on, so that figures from different machines are never compared as if alike.

The build machines of this project are VMs whose CPU changes between sessions (an Intel part with
AVX512-BF16 on some days, an AMD EPYC with AVX2 only on others), and OpenVINO's speed-up over torch
depends on the vector instructions: see docs/speed.md.
"""

from __future__ import annotations

from pathlib import Path

VECTOR_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    try:
        text = cpuinfo.read_text(encoding="ascii", errors="replace")
    except OSError:
        return "unknown CPU"
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return "unknown CPU"


def describe_cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict:
    """{'model', 'vector_flags', 'threads'}: the CPU's name, its vector extensions, the threads the engine uses."""
    from pantherseg.engine.cpu_quota import available_cpus
    from pantherseg.engine.openvino_backend import cpu_flags

    flags = cpu_flags(cpuinfo)
    return {
        "model": cpu_model(cpuinfo),
        "vector_flags": [f for f in VECTOR_FLAGS if f in flags],
        "threads": available_cpus(),
    }


def cpu_line(cpu: dict) -> str:
    flags = ", ".join(cpu["vector_flags"]) or "no AVX2 or AVX-512"
    return f"{cpu['model']} ({flags}), {cpu['threads']} threads"


# Assumed FMA units per core: two vector FMA pipes, as in Intel Skylake-SP Gold/Platinum and later server
# parts and AMD Zen 2-5 (Zen 4 runs 512-bit FMAs as two 256-bit halves, the same FLOPs per cycle as AVX2 x 2).
FMA_UNITS_PER_CORE = 2


def fp32_lanes(flags: set[str]) -> int:
    """fp32 values per vector FMA: 16 with AVX-512F, 8 with AVX2+FMA, else 4 (SSE, no FMA assumed)."""
    if "avx512f" in flags:
        return 16
    if "avx2" in flags and "fma" in flags:
        return 8
    return 4


def cpu_clock_ghz(cpuinfo: Path = Path("/proc/cpuinfo")) -> float | None:
    """The highest 'cpu MHz' /proc/cpuinfo reports (a VM usually reports the nominal clock), in GHz."""
    try:
        text = cpuinfo.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    clocks = [float(line.partition(":")[2]) for line in text.splitlines() if line.startswith("cpu MHz")]
    return max(clocks) / 1000 if clocks else None


def fp32_peak(cpuinfo: Path = Path("/proc/cpuinfo"), threads: int | None = None) -> dict:
    """The CPU's fp32 peak for ``threads`` threads: lanes x 2 FLOPs per FMA x FMA units x clock x threads.

    Each thread is counted as a full core; where the vCPUs are hyperthread pairs the real peak is half."""
    from pantherseg.engine.cpu_quota import available_cpus
    from pantherseg.engine.openvino_backend import cpu_flags

    flags = cpu_flags(cpuinfo)
    lanes, clock = fp32_lanes(flags), cpu_clock_ghz(cpuinfo)
    threads = threads or available_cpus()
    per_thread = lanes * 2 * FMA_UNITS_PER_CORE * clock if clock else None
    return {
        "lanes": lanes,
        "fma_units_per_core": FMA_UNITS_PER_CORE,
        "clock_ghz": clock,
        "threads": threads,
        "gflops": per_thread * threads if per_thread else None,
    }


def peak_line(peak: dict) -> str:
    if peak["gflops"] is None:
        return "fp32 peak unknown (no clock in /proc/cpuinfo)"
    return (
        f"fp32 peak {peak['gflops']:.0f} GFLOP/s = {peak['lanes']} lanes x 2 (FMA) x "
        f"{peak['fma_units_per_core']} FMA units (assumed) x {peak['clock_ghz']:.2f} GHz x "
        f"{peak['threads']} threads"
    )
