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


@lru_cache(maxsize=1)
def int8_saturates() -> bool:
    """Whether ONNX Runtime's int8 MatMul on this CPU saturates full-range int8 weights (measured, not guessed).

    Why: without VNNI (AVX2, AVX-512F) ONNX Runtime's u8 x s8 kernel multiplies with ``vpmaddubsw``, which sums
    each pair of products into int16 and clips it at 32,767; a uint8 activation (up to 255) against two int8
    weights near +-127 overflows (255 * 127 * 2 = 64,770). VNNI and AMX accumulate in int32 and are exact. Measured
    on a 2-core AVX2 EPYC with ONNX Runtime 1.32: random full-range operands came back wrong in 99.9% of the
    outputs, by up to 97,020; weights within the reduced range [-64, 64] (``--reduce-range``) came back exact. The
    probe multiplies 255s by 127s, whose exact product no saturating kernel returns."""
    import numpy as np
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    inner = 64
    weights = numpy_helper.from_array(np.full((inner, 2), 127, dtype=np.int8), "B")
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["A", "B"], ["Y"])], "int8_probe",
                              [helper.make_tensor_value_info("A", TensorProto.UINT8, [4, inner])],
                              [helper.make_tensor_value_info("Y", TensorProto.INT32, [4, 2])], [weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    probe = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    out = probe.run(None, {"A": np.full((4, inner), 255, dtype=np.uint8)})[0]
    return bool((out != 255 * 127 * inner).any())


def hardware_record() -> dict[str, Any]:
    """The machine, as a JSON-ready record for every latency and benchmark file (``int8_saturates``: whether
    this CPU's ONNX Runtime int8 clips full-range weights, see :func:`int8_saturates`)."""
    present = [flag for flag, _ in ISA_FLAGS if flag in cpu_flags()]
    return {"cpu": cpu_name(), "isa": instruction_set(), "isa_flags": present, "torch_kernels": torch_capability(),
            "aten_cpu_capability": os.environ.get("ATEN_CPU_CAPABILITY"), "cores": os.cpu_count(),
            "int8_saturates": int8_saturates()}


def cpu_description() -> str:
    """One line for a conditions line: ``AMD EPYC (AVX2; PyTorch kernels AVX2)``."""
    return f"{cpu_name()} ({instruction_set()}; PyTorch kernels {torch_capability()})"
