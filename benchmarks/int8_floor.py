"""Where an int8 model's time goes in ONNX Runtime, and what a speed-up bar over dense PyTorch would need.

For one exported candidate of a `pruneformer compare` directory (default: MLPruning 0.2 of seed 0) it measures,
in one run on this CPU:

1. dense PyTorch fp32 and the candidate's `model.int8.onnx` side by side (`pruneformer.deploy.latency.time_models`,
   interleaved rounds, the fastest and the median);
2. ONNX Runtime's per-node profile of the int8 session at the same shape, summed by operator and split into
   matrix products (int8 and fp32 GEMMs) and everything else (attention, LayerNorm, adds, GELU, quantization
   of activations, embeddings);
3. int8 against fp32 GEMM throughput in ONNX Runtime for every weight shape of the model, as one-MatMul graphs
   at the same number of rows (batch x length), each quantized by the same `quantize_dynamic` call export uses.

Then the arithmetic: at the bar (``--target``, default 8x) the int8 model may take dense / target; the non-GEMM
part's share of the measured time is its floor; the GEMMs must fit in what is left, which says how much faster
than measured they would have to run.

    python benchmarks/int8_floor.py runs/compare-quick/seed0 --candidate mlpruning-0.2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
GEMM_OPS = {"MatMul", "Gemm", "FusedGemm", "FusedMatMul", "MatMulInteger", "MatMulIntegerToFloat",
            "DynamicQuantizeMatMul", "QGemm", "QLinearMatMul"}


def profile_by_op(path: Path, shape: tuple[int, int], threads: int, runs: int, vocab: int) -> dict[str, float]:
    """Mean kernel milliseconds per run by operator type, from ONNX Runtime's node profile."""
    from pruneformer.deploy.runtime import OnnxClassifier, node_kernel_times

    model = OnnxClassifier(path, threads, spin=False, profile=True)
    ids = torch.from_numpy(np.random.default_rng(0).integers(min(1000, vocab - 1), vocab, shape))
    for _ in range(runs + 1):
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    totals: Counter[str] = Counter()
    for op, us in node_kernel_times(model.session):
        totals[op] += us
    return {op: us / 1000 / (runs + 1) for op, us in totals.most_common()}


def weight_shapes(path: Path) -> list[tuple[int, int]]:
    """(in, out) of every int8 weight of an int8 graph, in the order they appear, repeats kept."""
    import onnx

    graph = onnx.load(str(path)).graph
    return [tuple(i.dims) for i in graph.initializer if i.name.endswith("_quantized") and len(i.dims) == 2]


def gemm_throughput(shapes: list[tuple[int, int]], rows: int, threads: int, runs: int) -> list[dict[str, float]]:
    """fp32 and dynamic-int8 time of ``[rows, K] @ [K, N]`` in ONNX Runtime for each distinct (K, N)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from pruneformer.deploy.quantize import quiet
    from pruneformer.deploy.runtime import session

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, n in sorted(set(shapes)):
            fp32, int8 = Path(tmp) / f"{k}x{n}.onnx", Path(tmp) / f"{k}x{n}.int8.onnx"
            weight = numpy_helper.from_array((np.random.default_rng(0).standard_normal((k, n)) * 0.05).astype(np.float32), "w")
            graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "gemm",
                                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", k])],
                                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", n])], [weight])
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
            model.ir_version = 9
            onnx.save(model, fp32)
            with quiet():
                quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
            x = np.random.default_rng(1).standard_normal((rows, k)).astype(np.float32)
            sessions = {"fp32": session(fp32, threads, spin=False), "int8": session(int8, threads, spin=False)}
            times: dict[str, list[float]] = {name: [] for name in sessions}
            for _ in range(runs):  # interleaved, like time_models
                for name, sess in sessions.items():
                    t0 = time.perf_counter()
                    sess.run(None, {"x": x})
                    times[name].append(time.perf_counter() - t0)
            best = {name: 1000 * min(v[1:]) for name, v in times.items()}
            macs = rows * k * n
            results.append({"in": k, "out": n, "count": shapes.count((k, n)), "fp32_ms": best["fp32"],
                            "int8_ms": best["int8"], "fp32_gmacs": macs / best["fp32"] / 1e6,
                            "int8_gmacs": macs / best["int8"] / 1e6, "int8_speedup": best["fp32"] / best["int8"]})
    return results


def main() -> int:
    from pruneformer.deploy.hardware import cpu_description, hardware_record
    from pruneformer.deploy.latency import load_average, time_models
    from pruneformer.deploy.runtime import OnnxClassifier
    from pruneformer.models.saved import load_pruned_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("seed_dir", type=Path, help="a compare's seed<S> directory (with dense/ and the candidate)")
    parser.add_argument("--candidate", default="mlpruning-0.2")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds of the side-by-side timing")
    parser.add_argument("--target", type=float, default=8.0, help="the speed-up over dense PyTorch fp32 to test")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "int8_floor")
    args = parser.parse_args()

    int8_path = args.seed_dir / args.candidate / "model-onnx" / "model.int8.onnx"
    if not int8_path.is_file():
        raise SystemExit(f"error: {int8_path} does not exist; run `pruneformer compare` (with ONNX) first")
    torch.set_num_threads(args.threads)
    dense = load_pruned_model(args.seed_dir / "dense" / "model")[0].eval()
    vocab, shape, key = dense.config.vocab_size, (args.batch, args.length), f"{args.batch}x{args.length}"
    load_before = load_average()
    timing = time_models({"dense PyTorch fp32": dense, "int8": OnnxClassifier(int8_path, args.threads, spin=False)},
                         [shape], args.rounds, vocab)
    dense_ms, int8_ms = 1000 * timing[key]["dense PyTorch fp32"], 1000 * timing[key]["int8"]
    medians = {name: 1000 * v for name, v in timing["median"][key].items()}
    by_op = profile_by_op(int8_path, shape, args.threads, args.rounds, vocab)
    gemms = gemm_throughput(weight_shapes(int8_path), args.batch * args.length, args.threads, args.rounds + 1)

    profiled = sum(by_op.values())
    gemm_share = sum(ms for op, ms in by_op.items() if op in GEMM_OPS) / profiled
    budget = dense_ms / args.target
    floor = (1 - gemm_share) * int8_ms  # the non-GEMM part at the measured speed
    gemm_now = gemm_share * int8_ms
    needed = gemm_now / (budget - floor) if budget > floor else float("inf")
    result = {
        "candidate": args.candidate, "shape": list(shape), "threads": args.threads, "rounds": args.rounds,
        "cpu": cpu_description(), "machine": hardware_record(), "torch": torch.__version__, "load_average": [load_before, load_average()],
        "dense_pytorch_ms": dense_ms, "int8_ms": int8_ms, "speedup": dense_ms / int8_ms, "median_ms": medians,
        "speedup_median": medians["dense PyTorch fp32"] / medians["int8"], "profile_ms_by_op": by_op,
        "gemm_share": gemm_share, "target": args.target, "budget_ms": budget, "non_gemm_ms": floor,
        "gemm_ms": gemm_now, "gemm_speedup_needed": needed, "gemm_throughput": gemms,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    print(f"written to {args.out}.json and .md")
    return 0


def fmt(value: float | None) -> str:
    """A load average for the conditions line ("n/a" where the OS has none)."""
    return "n/a" if value is None else f"{value:.2f}"


def markdown(r: dict) -> str:
    """The result as a short Markdown page: the timing, the profile, the GEMM table and the arithmetic."""
    batch, length = r["shape"]
    lines = [f"`benchmarks/int8_floor.py` on {r['candidate']} (exported int8), batch {batch} x {length}, "
             f"{r['threads']} threads, {r['cpu']}, torch {r['torch']}; fastest of {r['rounds']} interleaved rounds "
             f"(1-minute load average {fmt(r['load_average'][0])} before, {fmt(r['load_average'][1])} after).", "",
             f"Dense PyTorch fp32 {r['dense_pytorch_ms']:.1f} ms, int8 {r['int8_ms']:.1f} ms: **{r['speedup']:.2f}x** "
             f"(medians {r['speedup_median']:.2f}x).", "",
             "ONNX Runtime's profile of the int8 session (kernel time per run):", "",
             "| operator | ms | share | kind |", "|---|---|---|---|"]
    total = sum(r["profile_ms_by_op"].values())
    for op, ms in r["profile_ms_by_op"].items():
        if ms / total >= 0.005:
            lines.append(f"| {op} | {ms:.1f} | {100 * ms / total:.1f}% | {'GEMM' if op in GEMM_OPS else 'other'} |")
    lines += ["", f"int8 against fp32 GEMMs in ONNX Runtime, {batch * length} rows (one MatMul per graph, "
              "dynamic int8 as export writes it):", "",
              "| K x N | in the model | fp32 ms | int8 ms | fp32 GMAC/s | int8 GMAC/s | int8 speed-up |",
              "|---|---|---|---|---|---|---|"]
    for g in r["gemm_throughput"]:
        lines.append(f"| {g['in']} x {g['out']} | {g['count']} | {g['fp32_ms']:.2f} | {g['int8_ms']:.2f} | "
                     f"{g['fp32_gmacs']:.0f} | {g['int8_gmacs']:.0f} | {g['int8_speedup']:.2f}x |")
    needed = r["gemm_speedup_needed"]
    lines += ["", f"At {r['target']:g}x the int8 model may take {r['budget_ms']:.1f} ms. Its non-GEMM part takes "
              f"{r['non_gemm_ms']:.1f} ms ({100 * (1 - r['gemm_share']):.0f}% of the profile) and its GEMMs "
              f"{r['gemm_ms']:.1f} ms; "
              + (f"the GEMMs would have to run {needed:.2f}x faster than measured to fit."
                 if needed != float("inf") else "the non-GEMM part alone is over the budget.")]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
