"""What the machine a number was measured on can do: the CPU's instruction set beside every latency figure.

Why it is recorded: the "2-core AMD EPYC" machines this project runs on are not one CPU. ONNX Runtime's int8
GEMMs use VNNI dot-product instructions where the CPU has them (int8 speed-ups differ about 1.5x between an
AVX2 and an AVX-512 VNNI CPU), and PyTorch's AVX-512 kernels sum in another order than its AVX2 ones. A
latency table that names only the CPU model would mix those machines silently.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

#: The flags (as ``/proc/cpuinfo`` spells them) that decide which int8 and fp32 kernels run, best first.
ISA_FLAGS: tuple[tuple[str, str], ...] = (
    ("amx_int8", "AMX"),
    ("avx512_vnni", "AVX-512 VNNI"),
    ("avx512f", "AVX-512"),
    ("avx_vnni", "AVX-VNNI"),
    ("avx2", "AVX2"),
)


@lru_cache(maxsize=1)
def _cpuinfo() -> str:
    """``/proc/cpuinfo``, read once per process (every latency record asks for it)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_flags() -> frozenset[str]:
    """The first CPU's feature flags from ``/proc/cpuinfo`` (empty where the OS has none)."""
    for line in _cpuinfo().splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_name() -> str:
    """The CPU's model name (Linux), or ``unknown CPU``."""
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def instruction_set(flags: frozenset[str] | None = None) -> str:
    """The best instruction set of :data:`ISA_FLAGS` the CPU has: ``AMX``, ``AVX-512 VNNI``, ``AVX-512``,
    ``AVX-VNNI``, ``AVX2``, or ``pre-AVX2`` (``unknown`` where no flags can be read)."""
    flags = cpu_flags() if flags is None else flags
    if not flags:
        return "unknown"
    return next((label for flag, label in ISA_FLAGS if flag in flags), "pre-AVX2")


def torch_capability() -> str:
    """The kernel set PyTorch dispatches to (``AVX2``, ``AVX512``, ``DEFAULT``; ``ATEN_CPU_CAPABILITY`` caps it)."""
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


def hardware_record() -> dict[str, Any]:
    """The machine, as a JSON-ready record for every latency and benchmark file."""
    present = [flag for flag, _ in ISA_FLAGS if flag in cpu_flags()]
    return {"cpu": cpu_name(), "isa": instruction_set(), "isa_flags": present, "torch_kernels": torch_capability(),
            "aten_cpu_capability": os.environ.get("ATEN_CPU_CAPABILITY"), "cores": os.cpu_count()}


def cpu_description() -> str:
    """One line for a conditions line: ``AMD EPYC (AVX2; PyTorch kernels AVX2)``."""
    return f"{cpu_name()} ({instruction_set()}; PyTorch kernels {torch_capability()})"
