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
    return {"model": cpu_model(cpuinfo), "vector_flags": [f for f in VECTOR_FLAGS if f in flags],
            "threads": available_cpus()}


def cpu_line(cpu: dict) -> str:
    flags = ", ".join(cpu["vector_flags"]) or "no AVX2 or AVX-512"
    return f"{cpu['model']} ({flags}), {cpu['threads']} threads"
