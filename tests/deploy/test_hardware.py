"""The machine beside every latency figure: the instruction set that decides int8 and fp32 kernel speed."""

from __future__ import annotations

import torch
from torch import nn

from pruneformer.deploy import hardware
from pruneformer.deploy.latency import time_models
from pruneformer.runs.report import hardware_summary


def test_instruction_set_names_the_best_kernel_family_the_flags_allow():
    base = frozenset({"sse4_2", "avx", "fma", "avx2"})
    assert hardware.instruction_set(base) == "AVX2"
    assert hardware.instruction_set(base | {"avx_vnni"}) == "AVX-VNNI"
    assert hardware.instruction_set(base | {"avx512f", "avx512bw"}) == "AVX-512"
    assert hardware.instruction_set(base | {"avx512f", "avx512_vnni", "avx512_bf16"}) == "AVX-512 VNNI"
    assert hardware.instruction_set(base | {"avx512f", "avx512_vnni", "amx_tile", "amx_int8"}) == "AMX"
    assert hardware.instruction_set(frozenset({"sse4_2", "avx"})) == "pre-AVX2"
    assert hardware.instruction_set(frozenset()) == "unknown"


def test_this_machines_record_agrees_with_proc_cpuinfo_and_torch():
    record = hardware.hardware_record()
    flags = open("/proc/cpuinfo").read().split("flags", 1)[1].split("\n", 1)[0].split()
    assert record["isa"] == hardware.instruction_set(frozenset(flags))
    assert record["isa_flags"] == [f for f, _ in hardware.ISA_FLAGS if f in flags]
    assert record["torch_kernels"] == torch.backends.cpu.get_cpu_capability()
    assert record["isa"] in hardware.cpu_description() and record["isa"] in hardware_summary()


def test_every_latency_record_carries_the_machine():
    class Tiny(nn.Module):
        def forward(self, input_ids, attention_mask):
            return input_ids.float().sum()

    timing = time_models({"a": Tiny(), "b": Tiny()}, [(2, 4)], rounds=2, vocab=2000)
    assert set(timing) == {"2x4", "median", "hardware"} and set(timing["2x4"]) == {"a", "b"}
    assert timing["hardware"] == hardware.hardware_record()


def test_the_int8_saturation_probe_agrees_with_the_instruction_set():
    """ONNX Runtime's u8 x s8 kernel clips pair sums in int16 without VNNI (AVX2, AVX-512F) and is exact with
    VNNI or AMX: the probe measures it, and the record carries it."""
    saturates = hardware.int8_saturates()
    isa = hardware.instruction_set()
    if isa in ("AVX2", "AVX-512"):
        assert saturates is True
    elif isa in ("AVX-512 VNNI", "AMX", "AVX-VNNI"):
        assert saturates is False
    assert hardware.hardware_record()["int8_saturates"] is saturates
