"""Probe: does static (calibrated) int8 make a shrunk model faster in ONNX Runtime than the dynamic int8 that
`pruneformer export --quantize int8` writes?

It takes one exported candidate of a `pruneformer compare` directory (default: MLPruning 0.2 of seed 0), fuses it
with ONNX Runtime's transformer optimizer as `export` does, quantizes it statically (QOperator and QDQ, MatMul
weights int8, activations uint8, calibrated on real training sentences), and times dense PyTorch fp32, the dynamic
int8 file and both static files side by side (`pruneformer.deploy.latency.time_models`, interleaved rounds).

    python benchmarks/static_int8_probe.py runs/compare-quick/seed0 --candidate mlpruning-0.2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def main() -> int:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.transformers.optimizer import optimize_model
    from transformers import AutoTokenizer

    from pruneformer.data import load_data
    from pruneformer.deploy.hardware import cpu_description, hardware_record
    from pruneformer.deploy.latency import time_models
    from pruneformer.deploy.quantize import quiet
    from pruneformer.deploy.runtime import OnnxClassifier, session
    from pruneformer.models.saved import load_pruned_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("seed_dir", type=Path, help="a compare's seed<S> directory")
    parser.add_argument("--candidate", default="mlpruning-0.2")
    parser.add_argument("--calibration", type=int, default=256, help="calibration sentences")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--work-dir", type=Path, default=HERE.parent / "runs" / "static-int8-probe")
    args = parser.parse_args()

    exported = args.seed_dir / args.candidate / "model-onnx"
    args.work_dir.mkdir(parents=True, exist_ok=True)
    fused = args.work_dir / "fused.onnx"
    with quiet():
        optimize_model(str(exported / "model.onnx"), model_type="bert", num_heads=0, hidden_size=0,
                       opt_level=0).save_model_to_file(str(fused))
    tokenizer = AutoTokenizer.from_pretrained(exported)
    texts = [row["text"] for row in load_data("embedded", seed=0).train.to_list()[: args.calibration]]
    names = [i.name for i in session(fused).get_inputs()]

    class Sentences(CalibrationDataReader):
        def __init__(self) -> None:
            batches = [tokenizer(texts[i:i + 32], padding="max_length", truncation=True, max_length=args.length,
                                 return_tensors="np") for i in range(0, len(texts), 32)]
            self.batches = iter([{k: b[k].astype(np.int64) for k in names} for b in batches])

        def get_next(self):
            return next(self.batches, None)

    files = {"static int8 (QOperator)": args.work_dir / "static_qop.onnx",
             "static int8 (QDQ)": args.work_dir / "static_qdq.onnx"}
    for (name, path), fmt in zip(files.items(), (QuantFormat.QOperator, QuantFormat.QDQ)):
        with quiet():
            quantize_static(str(fused), str(path), Sentences(), quant_format=fmt, weight_type=QuantType.QInt8,
                            activation_type=QuantType.QUInt8, op_types_to_quantize=["MatMul"], per_channel=False)
    torch.set_num_threads(args.threads)
    dense = load_pruned_model(args.seed_dir / "dense" / "model")[0].eval()
    models = {"dense PyTorch fp32": dense,
              "dynamic int8 (pruneformer export)": OnnxClassifier(exported / "model.int8.onnx", args.threads, spin=False)}
    models |= {name: OnnxClassifier(path, args.threads, spin=False) for name, path in files.items()}
    timing = time_models(models, [(args.batch, args.length)], args.rounds, dense.config.vocab_size)
    key = f"{args.batch}x{args.length}"
    base_min, base_med = timing[key]["dense PyTorch fp32"], timing["median"][key]["dense PyTorch fp32"]
    result = {"candidate": args.candidate, "shape": [args.batch, args.length], "threads": args.threads,
              "rounds": args.rounds, "cpu": cpu_description(), "machine": hardware_record(), "torch": torch.__version__,
              "models": {name: {"fastest_ms": 1000 * timing[key][name], "median_ms": 1000 * timing["median"][key][name],
                                "speedup_fastest": base_min / timing[key][name],
                                "speedup_median": base_med / timing["median"][key][name]} for name in models}}
    out = HERE / "results" / "static_int8_probe.json"
    out.write_text(json.dumps(result, indent=2))
    for name, row in result["models"].items():
        print(f"{name:36s} fastest {row['fastest_ms']:7.1f} ms ({row['speedup_fastest']:.2f}x)  "
              f"median {row['median_ms']:7.1f} ms ({row['speedup_median']:.2f}x)")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
