"""Latency of the structured benchmark's deployed models: what `benchmarks/structured.py` scored, timed where it
is deployed (ONNX Runtime int8 and fp32, spinning workers off) against dense PyTorch fp32, side by side.

For one seed of ``results/structured-<preset>.jsonl`` it takes the dense model and every pruned model whose
directory is still there (with the ``-onnx`` export that the sweep scored), times all of them in interleaved
rounds at batch 32 x 128 (and 1 x 128) with 2 threads, and writes ratios to dense PyTorch fp32 with the CPU's
instruction set beside them (int8 kernels differ: AVX2, AVX-512 VNNI, AMX). Pause other work while it runs.

    python benchmarks/deployed_latency.py --preset standard --seed 0 --rounds 10

Or, for models that any command saved (a compare's candidates, a model rebuilt on another CPU): ``--dense DIR``
and ``--model LABEL=DIR`` (repeatable) time those side by side and write ``deployed-latency-<tag>.{md,json}``.
Latency depends only on a model's shapes, so a model with the shapes of a sweep's model (``l1-structured``
keeps the same heads and units whatever the retraining budget: rebuild it with ``--epochs 0``) times the same;
accuracy is then not reported, as it would not be that model's.

    python benchmarks/deployed_latency.py --tag vnni --dense runs/d/model --model "l1 0.2=runs/l1/model"
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from pruneformer.deploy.export import export_model
from pruneformer.deploy.hardware import cpu_description, hardware_record
from pruneformer.deploy.latency import time_models
from pruneformer.deploy.runtime import OnnxClassifier
from pruneformer.models.saved import load_pruned_model

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from structured import dense_model_of, deployed_dir  # noqa: E402  (the sweep that wrote the records)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="standard")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dense", type=Path, help="a saved dense model: time --model directories against it")
    parser.add_argument("--model", action="append", default=[], metavar="LABEL=DIR",
                        help="a saved pruned model to time beside --dense (repeatable)")
    parser.add_argument("--tag", default="models", help="with --dense: the results' name, deployed-latency-<tag>")
    parser.add_argument("--per-tensor", action="store_true", help="with --dense: int8 weights per tensor")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.dense is not None:
        return time_saved_models(args)
    results = HERE / "results"
    records = [json.loads(line) for line in (results / f"structured-{args.preset}.jsonl").read_text().splitlines()]
    mine = [r for r in records if r["seed"] == args.seed and Path(r["model_dir"]).is_dir()]
    if not mine:
        print(f"no model of seed {args.seed} left on this machine: rerun the sweep's runs first")
        return 1
    dense_dir = dense_model_of(mine[0], args.preset.split("-")[0])
    per_channel = bool(mine[0].get("int8_per_channel"))
    dense, _, _ = load_pruned_model(dense_dir)
    models = {"dense | pytorch fp32": dense.eval()}
    accuracy = {"dense": {"test": mine[0]["dense_test"], "int8_test": mine[0].get("dense_int8_test")}}
    add_deployed(models, [("dense", dense_dir)] + [(f"{r['method']} {r['fraction']:g}", Path(r["model_dir"]))
                                                   for r in mine], per_channel, args.threads)
    for r in mine:
        accuracy[f"{r['method']} {r['fraction']:g}"] = {"test": r["test"], "int8_test": r.get("int8_test")}
    heading = (f"Seed {args.seed} of `structured-{args.preset}` (int8 weights "
               f"{'per channel' if per_channel else 'per tensor'}); ")
    return write_timing(models, accuracy, heading, f"deployed-latency-{args.preset}-seed{args.seed}", args,
                        dense.config.vocab_size)


def add_deployed(models: dict, named_dirs: list[tuple[str, Path]], per_channel: bool, threads: int) -> None:
    """Each saved model's ONNX fp32 and int8 exports (made if missing), ready to time, spinning workers off."""
    for label, directory in named_dirs:
        out = deployed_dir(directory, per_channel)  # the export the sweep scored (its scheme)
        if not (out / "model.int8.onnx").is_file():
            export_model(directory, out, quantize="int8", per_channel=per_channel, log=lambda line: None)
        models[f"{label} | ort fp32"] = OnnxClassifier(out / "model.onnx", threads=threads, spin=False)
        models[f"{label} | ort int8"] = OnnxClassifier(out / "model.int8.onnx", threads=threads, spin=False)


def time_saved_models(args: argparse.Namespace) -> int:
    """``--dense`` / ``--model``: any saved models, timed side by side; shapes only, so no accuracy column."""
    named = [("dense", args.dense)]
    for item in args.model:
        label, sep, directory = item.partition("=")
        if not sep or not label or " | " in label:
            raise SystemExit(f"--model {item!r}: give it as LABEL=DIR, e.g. --model 'l1 0.2=runs/l1/model'")
        named.append((label.strip(), Path(directory)))
    for label, directory in named:
        if not (directory / "config.json").is_file():
            raise SystemExit(f"{label}: {directory} is not a saved model (no config.json); pass the model directory")
    dense, _, _ = load_pruned_model(args.dense)
    models = {"dense | pytorch fp32": dense.eval()}
    add_deployed(models, named, not args.per_tensor, args.threads)
    heading = (f"Saved models ({', '.join(f'{label}: `{d}`' for label, d in named)}; int8 weights "
               f"{'per tensor' if args.per_tensor else 'per channel'}); ")
    return write_timing(models, None, heading, f"deployed-latency-{args.tag}", args, dense.config.vocab_size)


def write_timing(models: dict, accuracy: dict | None, heading: str, stem: str, args: argparse.Namespace,
                 vocab_size: int) -> int:
    """Time ``models`` in interleaved rounds and write the ratio table (and the raw timings) under results/."""
    results = HERE / "results"
    shapes = [(32, 128), (1, 128)]
    timing = time_models(models, shapes, args.rounds, vocab_size)
    scored = accuracy is not None
    lines = [heading + f"{cpu_description()}, {args.threads} threads, ONNX "
             f"Runtime spinning off; fastest of {args.rounds} interleaved rounds (median in brackets), as speed-up over "
             "dense PyTorch fp32 in the same rounds" + ("; test accuracy (%) of the model in that runtime (int8 scored "
                                                        "by ONNX Runtime, fp32 graphs equal PyTorch)." if scored else "."),
             ""]
    columns = ["model", "runtime"] + (["test"] if scored else []) + [f"{b} x {length}" for b, length in shapes]
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for name in models:
        label, runtime = name.split(" | ")
        cells = []
        for b, length in shapes:
            key = f"{b}x{length}"
            base, base_median = timing[key]["dense | pytorch fp32"], timing["median"][key]["dense | pytorch fp32"]
            cells.append(f"{base / timing[key][name]:.2f}x ({base_median / timing['median'][key][name]:.2f}x)")
        if scored:
            acc = accuracy[label]["int8_test" if runtime.endswith("int8") else "test"]
            cells.insert(0, "-" if acc is None else f"{100 * acc:.1f}")
        lines.append(f"| {label} | {runtime} | " + " | ".join(cells) + " |")
    ms = {k: 1000 * v for k, v in timing["32x128"].items()}
    lines += ["", f"Dense PyTorch fp32 at 32 x 128: {ms['dense | pytorch fp32']:.0f} ms "
              f"(median {1000 * timing['median']['32x128']['dense | pytorch fp32']:.0f} ms)."]
    markdown = "\n".join(lines) + "\n"
    (results / f"{stem}.md").write_text(markdown)
    (results / f"{stem}.json").write_text(json.dumps({"timing_s": timing, "accuracy": accuracy, "rounds": args.rounds,
                                                      "threads": args.threads, "machine": hardware_record()}, indent=2))
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
