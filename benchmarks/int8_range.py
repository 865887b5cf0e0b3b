"""What int8 computes on this CPU, by weight range: a compare's models scored on test in ONNX Runtime here, beside
the exact int8 of a VNNI / AMX CPU computed in PyTorch (issue "Pruning that pays", parts 2 and 4).

Why: without VNNI, ONNX Runtime's u8 x s8 MatMul sums pairs of products in int16 and clips them
(``pruneformer.deploy.hardware.int8_saturates``), so a full-range int8 export computes other numbers on an AVX2
CPU than on the VNNI CPU it was scored on. ``export --reduce-range`` stores weights in [-64, 64], which no CPU
clips, at the cost of one bit. For every model of a compare's run directory (every seed's dense model and
candidates), or of a sweep's (``benchmarks/structured.py``'s ``runs/bench/structured-<preset>``, the same
``seed*/<run>/model`` layout), this scores on that seed's own test rows, cut as the run's own recipe cut them:

- ``fp32``: the PyTorch model;
- ``exact full``: the export's full-range int8 computed exactly (``deploy.fake_quant.simulate_int8``), what a VNNI
  or AMX CPU's ONNX Runtime computes (bit for bit, ``tests/deploy/test_fake_quant.py``);
- ``ORT full (here)``: the full-range int8 export in ONNX Runtime on this CPU;
- ``ORT reduced (here)``: the ``--reduce-range`` export in ONNX Runtime on this CPU (exact on any CPU), and
  ``exact reduced``, its PyTorch simulation, which agrees with it to an example or so (the fp32 parts between
  the int8 products, GELU, softmax, LayerNorm, sum in another order in ONNX Runtime).

    python benchmarks/int8_range.py --compare runs/compare-standard-avx2 --tag compare-standard-avx2
    python benchmarks/int8_range.py --compare runs/bench/structured-standard-b8 --tag structured-standard-b8

One thread; resumable from ``results/int8_range-<tag>.json``. Writes ``.json`` and ``.md`` with the CPU's
instruction set and whether its int8 saturates.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import torch
from transformers import DataCollatorWithPadding

from pruneformer.data import tokenize_bundle
from pruneformer.deploy.export import export_model
from pruneformer.deploy.fake_quant import simulate_int8
from pruneformer.deploy.hardware import cpu_description, hardware_record
from pruneformer.deploy.runtime import score
from pruneformer.models.saved import load_pruned_model
from pruneformer.runs.engine import prepare_data
from pruneformer.runs.recipe import load_recipe
from pruneformer.train.evaluation import evaluate

HERE = Path(__file__).resolve().parent
#: column -> what it is, in table order
COLUMNS = {"fp32": "PyTorch fp32", "exact_full": "exact full (VNNI/AMX)", "ort_full": "ORT full (here)",
           "ort_reduced": "ORT reduced (here)", "exact_reduced": "exact reduced"}


def models_of(compare_dir: Path) -> list[tuple[int, str, Path]]:
    """(seed, label, model dir) of every saved model in a compare's run directory."""
    found = []
    for seed_dir in sorted(compare_dir.glob("seed*")):
        for run in sorted(p for p in seed_dir.iterdir() if (p / "model" / "config.json").is_file()):
            found.append((int(seed_dir.name[4:]), run.name, run / "model"))
    if not found:
        raise SystemExit(f"error: {compare_dir} holds no seed*/<run>/model directories; pass a compare's -o "
                         "directory or a sweep's runs/bench/structured-<preset>")
    return found


def score_model(directory: Path, model: Any, tokenizer: Any, test: Any, metrics: list[str]) -> dict[str, float]:
    """Every column of :data:`COLUMNS` for one saved model (loaded from ``directory``), on one tokenized test
    split (accuracy, %). The simulations run on the loaded model and are removed after each, restoring its fp32
    weights exactly (``Int8Simulation.remove(leave_quantized=False)``)."""
    collator = DataCollatorWithPadding(tokenizer)
    model.eval()

    def accuracy() -> float:
        with torch.no_grad():
            return 100 * evaluate(model, test, collator, metrics)["accuracy"]

    row = {"fp32": accuracy()}
    for key, reduce_range in (("exact_full", False), ("exact_reduced", True)):
        simulation = simulate_int8(model, per_channel=True, reduce_range=reduce_range)
        row[key] = accuracy()
        simulation.remove(leave_quantized=False)
    for key, reduce_range in (("ort_full", False), ("ort_reduced", True)):
        out = directory.with_name(f"{directory.name}-int8-range-{'reduced' if reduce_range else 'full'}")
        export_model(directory, out, quantize="int8", reduce_range=reduce_range, log=lambda line: None)
        row[key] = 100 * score(out / "model.int8.onnx", test, tokenizer, metrics)["accuracy"]
    return row


def markdown(rows: list[dict], machine: dict, description: str) -> str:
    labels = sorted({r["label"] for r in rows}, key=lambda label: (label != "dense", label))
    seeds = sorted({r["seed"] for r in rows})
    lines = [f"# int8 by weight range: test accuracy (%) on {description}", "",
             f"int8 of this CPU saturates full-range weights: **{'yes' if machine['int8_saturates'] else 'no'}**. "
             f"Seeds {', '.join(map(str, seeds))}; mean over seeds (per-seed values in brackets); per-channel "
             "weights, classifier fp32, as `export --quantize int8 [--reduce-range]`.", "",
             "| model | " + " | ".join(COLUMNS.values()) + " |", "|---|" + "---|" * len(COLUMNS)]
    for label in labels:
        mine = sorted((r for r in rows if r["label"] == label), key=lambda r: r["seed"])
        cells = [f"{statistics.mean(r[k] for r in mine):.2f} ({', '.join(f'{r[k]:.1f}' for r in mine)})"
                 for k in COLUMNS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compare", type=Path, required=True, help="a compare's output directory (its -o), or a "
                        "sweep's runs/bench/structured-<preset>")
    parser.add_argument("--tag", required=True, help="results/int8_range-<tag>.{json,md}")
    args = parser.parse_args()
    found = models_of(args.compare)
    for _, _, directory in found:
        if not (directory.parent / "recipe.yaml").is_file():
            raise SystemExit(f"error: {directory.parent}/recipe.yaml not found; every run keeps the recipe its data "
                             "was cut with: pass a compare's or a sweep's directory as it was written")
    torch.set_num_threads(1)
    out_json = HERE / "results" / f"int8_range-{args.tag}.json"
    rows = json.loads(out_json.read_text())["rows"] if out_json.is_file() else []
    done = {(r["seed"], r["label"]) for r in rows}
    machine, description = hardware_record(), cpu_description()
    tests: dict[tuple[int, str], Any] = {}
    for seed, label, directory in found:
        if (seed, label) in done:
            continue
        model, tokenizer, _ = load_pruned_model(directory)
        data = load_recipe(directory.parent / "recipe.yaml").data
        key = (seed, repr(data))
        if key not in tests:  # each seed's own test rows, tokenized as its run scored them
            bundle = prepare_data(data, seed)
            tests[key] = (tokenize_bundle(bundle, tokenizer, data.max_length).test, list(bundle.task.metrics))
        row = {"seed": seed, "label": label, "model_dir": str(directory),
               **score_model(directory, model, tokenizer, *tests[key])}
        rows.append(row)
        print(f"seed {seed} {label}: " + ", ".join(f"{COLUMNS[k]} {row[k]:.1f}" for k in COLUMNS), flush=True)
        out_json.write_text(json.dumps({"hardware": machine, "cpu": description, "compare": str(args.compare),
                                        "rows": rows}, indent=2))
    (HERE / "results" / f"int8_range-{args.tag}.md").write_text(markdown(rows, machine, description))
    print(markdown(rows, machine, description))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
