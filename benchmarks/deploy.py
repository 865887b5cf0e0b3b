"""Deploy benchmark: what a pruned model scores and how fast it runs where it is deployed, ONNX Runtime on a CPU.

Models (seed 0 of ``benchmarks/structured.py``'s preset, one dense model shared by all of them): the dense
fine-tuned MiniLM-L6, MLPruning at 0.5 and 0.2 of the encoder weights (``structured.run_one``, the same runs
and directories as the structured benchmark, so either script reuses the other's models) and an SPP cut at
ratio 0.5 (one search on that dense model, then ``spp-extract``'s cut and fine-tune). Every model is
trained once and reused: a second call finds it and goes straight on.

Variants: dense in PyTorch fp32 (the reference), and every model in ONNX Runtime fp32 and int8
(:func:`pruneformer.deploy.export.export_model`: graph fusions, then dynamic int8 quantization with the classifier
kept in fp32). Accuracy on dev and test for each (``--stage accuracy``), and CPU latency at batch 1 and 32,
lengths 64 and 128, with 2 intra-op threads, all variants taking turns inside each round
(``--stage latency``), as ratios to dense PyTorch fp32 measured in the same rounds.

    python benchmarks/deploy.py --preset quick --stage train --models dense          # one thread, then
    python benchmarks/deploy.py --preset quick --stage train --models mlpruning-0.5 mlpruning-0.2 &
    python benchmarks/deploy.py --preset quick --stage train --models spp-0.5 &
    python benchmarks/deploy.py --preset quick --stage export     # ONNX fp32 + int8, parity checked
    python benchmarks/deploy.py --preset quick --stage accuracy   # dev/test of every variant
    python benchmarks/deploy.py --preset quick --stage latency --rounds 10   # machine otherwise idle
    python benchmarks/deploy.py --preset quick --stage report     # tables, plot, from the JSON files
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import structured as structured_bench  # noqa: E402  (benchmarks/structured.py: the same runs and directories)

from pruneformer.deploy.hardware import cpu_description  # noqa: E402
from pruneformer.deploy.latency import time_models  # noqa: E402
from pruneformer.runs.report import hardware_summary  # noqa: E402

MODELS = ["dense", "2:4", "mlpruning-0.5", "mlpruning-0.2", "spp-0.5"]
#: The 2:4 model: magnitude projection, then masked retraining (NVIDIA's ASP recipe), as
#: ``benchmarks/nm_accuracy.py``'s quick preset spends on it (1 epoch).
NM_EPOCHS = 1.0
#: SPP's search and cut fine-tune, as ``benchmarks/spp.py``'s quick preset (0.5 epoch each).
SPP = dict(search_epochs=0.5, finetune=0.5, ratio=0.5)


def log(line: str) -> None:
    print("   ", line, flush=True)


def structured_args(args) -> SimpleNamespace:
    """The arguments ``benchmarks/structured.py``'s helpers read."""
    return SimpleNamespace(work_dir=args.work_dir, tag="")


def spp_dir(args) -> Path:
    return Path(args.work_dir) / f"deploy-{args.preset}" / "seed0" / "spp-search"


def model_dir(args, name: str) -> Path:
    """Where the trained model ``name`` lives (whether or not it is there yet)."""
    if name == "dense":
        return structured_bench.dense_dir(structured_args(args), args.preset, 0) / "model"
    if name.startswith("mlpruning-"):
        return Path(args.work_dir) / f"structured-{args.preset}" / "seed0" / name / "model"
    if name == "2:4":
        return Path(args.work_dir) / f"deploy-{args.preset}" / "seed0" / "magnitude-retrain-2x4" / "model"
    return spp_dir(args) / f"ratio-{SPP['ratio']:.2f}"


def train(args, name: str) -> Path:
    """Train ``name`` unless a finished model is already there (runs resume where they stopped)."""
    preset = structured_bench.PRESETS[args.preset]
    sargs = structured_args(args)
    dense = structured_bench.ensure_dense(sargs, args.preset, preset, 0)
    if name.startswith("mlpruning-") and not (model_dir(args, name) / "model.safetensors").is_file():
        structured_bench.run_one(sargs, args.preset, preset, 0, "mlpruning", float(name.split("-")[1]))
    elif name == "2:4" and not (model_dir(args, name) / "model.safetensors").is_file():
        from pruneformer.runs.pipeline import run
        from pruneformer.runs.recipe import build_recipe

        out = model_dir(args, name).parent
        recipe = structured_bench.base_recipe(preset, 0, out)
        recipe["dense"].update(epochs=0.0, checkpoint=str(dense / "model"))
        recipe["prune"].update(method="magnitude-retrain", pattern="2:4", epochs=NM_EPOCHS)
        run(build_recipe(recipe), resume=(out / "run_state.json").is_file(), progress=False, log=log)
    elif name.startswith("spp-") and not (model_dir(args, name) / "model.safetensors").is_file():
        from pruneformer.methods.spp.record import PATH_FILE
        from pruneformer.runs.recipe import build_recipe
        from pruneformer.runs.solution_path import extract, search

        out = spp_dir(args)
        if not (out / "model" / PATH_FILE).is_file():
            recipe = structured_bench.base_recipe(preset, 0, out)
            recipe["dense"].update(epochs=0.0, checkpoint=str(dense / "model"))
            recipe["spp"] = {"epochs": SPP["search_epochs"], "finetune_epochs": SPP["finetune"]}
            search(build_recipe(recipe), progress=False, log=log)
        extract(out, [SPP["ratio"]], progress=False, log=log)
    return model_dir(args, name)


# -- export, accuracy, latency ------------------------------------------------------------------------
def onnx_dir(args, name: str) -> Path:
    return Path(args.work_dir) / f"deploy-{args.preset}" / "onnx" / name.replace(":", "x")


def task_data(args, tokenizer):
    """The preset's data (the split every model was trained and scored on), tokenized."""
    preset = structured_bench.PRESETS[args.preset]
    return structured_bench.embedded_splits(tokenizer, 0, preset["max_train"], preset["max_eval"])


def export_all(args, results: dict) -> None:
    """ONNX fp32 + int8 of every model, checked against PyTorch on the check sentences and the dev split."""
    from pruneformer.deploy.export import export_model

    for name in args.models:
        if name in results["exports"] and (onnx_dir(args, name) / "model.int8.onnx").is_file():
            continue
        print(f"== export {name}", flush=True)
        record = export_model(model_dir(args, name), onnx_dir(args, name), quantize="int8",
                              dev=lambda tokenizer: (task_data(args, tokenizer).dev, ["accuracy"]), log=log)
        results["exports"][name] = {k: record[k] for k in ("check", "quantization", "wall_time_s", "opset")}
        save(args, results)


def accuracy_all(args, results: dict) -> None:
    """Dev and test accuracy of every variant; PyTorch vs ONNX Runtime fp32 logits on every example."""
    from transformers import DataCollatorWithPadding

    from pruneformer.deploy.runtime import compare, score, session, split_batches
    from pruneformer.models.saved import load_pruned_model
    from pruneformer.train.evaluation import evaluate

    for name in args.models:
        if name in results["accuracy"]:
            continue
        print(f"== accuracy {name}", flush=True)
        model, tokenizer, _ = load_pruned_model(model_dir(args, name))
        data = task_data(args, tokenizer)
        collator = DataCollatorWithPadding(tokenizer)
        row: dict = {}
        for split in ("dev", "test"):
            dataset = getattr(data, split)
            row[f"pytorch fp32/{split}"] = evaluate(model, dataset, collator, ["accuracy"])["accuracy"]
            for precision, file in (("fp32", "model.onnx"), ("int8", "model.int8.onnx")):
                path = onnx_dir(args, name) / file
                row[f"onnxruntime {precision}/{split}"] = score(path, dataset, tokenizer, ["accuracy"])["accuracy"]
            row[f"parity/{split}"] = compare(model, session(onnx_dir(args, name) / "model.onnx"),
                                             split_batches(dataset, tokenizer))
        results["accuracy"][name] = row
        save(args, results)
        log(json.dumps(row))


#: Latency rows: (label, model, runtime). The issue's list, plus each pruned model in PyTorch for reference.
VARIANTS = [("dense", "pytorch fp32"), ("dense", "onnxruntime fp32"), ("dense", "onnxruntime int8"),
            ("mlpruning-0.5", "pytorch fp32"), ("mlpruning-0.5", "onnxruntime fp32"), ("mlpruning-0.5", "onnxruntime int8"),
            ("mlpruning-0.2", "pytorch fp32"), ("mlpruning-0.2", "onnxruntime fp32"), ("mlpruning-0.2", "onnxruntime int8"),
            ("spp-0.5", "pytorch fp32"), ("spp-0.5", "onnxruntime fp32"), ("spp-0.5", "onnxruntime int8")]
SHAPES = [(1, 64), (1, 128), (32, 64), (32, 128)]


def should_beat(model: str, runtime: str) -> list[tuple[str, str]]:
    """What each variant must be faster than: int8 than fp32 of the same model, ONNX Runtime than PyTorch
    at the same precision, a pruned model than the dense one in the same runtime and precision."""
    refs = []
    if runtime == "onnxruntime int8":
        refs.append((model, "onnxruntime fp32"))
    if runtime == "onnxruntime fp32":
        refs.append((model, "pytorch fp32"))
    if model != "dense":
        refs.append(("dense", runtime))
    return refs


def latency_all(args, results: dict) -> None:
    """Fastest of ``--rounds`` interleaved rounds per variant and shape (``pruneformer.deploy.latency.time_models``)."""
    from pruneformer.deploy.runtime import OnnxClassifier
    from pruneformer.models.saved import load_pruned_model

    torch.set_num_threads(args.latency_threads)
    models = {}
    for name, runtime in VARIANTS:
        if runtime == "pytorch fp32":
            models[f"{name} | {runtime}"] = load_pruned_model(model_dir(args, name))[0].eval()
        else:
            file = "model.onnx" if runtime.endswith("fp32") else "model.int8.onnx"
            models[f"{name} | {runtime}"] = OnnxClassifier(onnx_dir(args, name) / file, threads=args.latency_threads,
                                                           spin=False)
    vocab = models["dense | pytorch fp32"].config.vocab_size
    load_before = os.getloadavg()
    timing = time_models(models, SHAPES, args.rounds, vocab)
    results["latency"] = {"timing_s": timing, "rounds": args.rounds, "threads": args.latency_threads,
                          "hardware": hardware_summary(), "load_before": load_before, "load_after": os.getloadavg(),
                          "cpu": cpu_description()}
    save(args, results)


# -- results ------------------------------------------------------------------------------------------
def results_path(args) -> Path:
    return HERE / "results" / f"deploy-{args.preset}.json"


def load_results(args) -> dict:
    path = results_path(args)
    results = json.loads(path.read_text()) if path.is_file() else {}
    for key in ("exports", "accuracy"):
        results.setdefault(key, {})
    return results


def save(args, results: dict) -> None:
    results_path(args).parent.mkdir(exist_ok=True)
    results_path(args).write_text(json.dumps(results, indent=2))


def report(args, results: dict) -> str:
    """The Markdown tables (parity, int8 accuracy, latency) and the accuracy-vs-latency plot."""
    preset = structured_bench.PRESETS[args.preset]
    lines = [f"Preset `{args.preset}` of `benchmarks/structured.py` (seed 0: train {preset['max_train']}, dev/test "
             f"{preset['max_eval']}, max length 64, dense {preset['dense_epochs']} epochs); MLPruning as in that "
             f"benchmark; 2:4 = magnitude + {NM_EPOCHS:g} epoch masked retrain; SPP = one {SPP['search_epochs']:g}-epoch "
             f"search on the same dense model, cut at ratio {SPP['ratio']:g}, {SPP['finetune']:g}-epoch fine-tune. "
             "ONNX opset 23 (torch.onnx.export, dynamo), int8 = ONNX Runtime's transformer optimizer, then dynamic "
             "int8 (MatMul and Gemm weights QInt8 per tensor, the classifier fp32: export's default).", ""]
    acc = results["accuracy"]
    if acc:
        pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
        lines += ["Accuracy (%) and export parity (PyTorch fp32 vs ONNX Runtime fp32 logits on every dev and test "
                  "example):", "",
                  "| model | PyTorch fp32 dev / test | ORT fp32 dev / test | ORT int8 dev / test | int8 - fp32 (test) "
                  "| max abs diff (dev, test) | predictions agree |", "|---|---|---|---|---|---|---|"]
        for name in MODELS:
            if name not in acc:
                continue
            r = acc[name]
            cells = [f"{pct(r[f'{k}/dev'])} / {pct(r[f'{k}/test'])}" for k in ("pytorch fp32", "onnxruntime fp32",
                                                                                   "onnxruntime int8")]
            drop = 100 * (r["onnxruntime int8/test"] - r["onnxruntime fp32/test"])
            parity = [r["parity/dev"], r["parity/test"]]
            lines.append(f"| {name} | {' | '.join(cells)} | {drop:+.1f} | "
                         f"{parity[0]['max_abs_diff']:.1e}, {parity[1]['max_abs_diff']:.1e} | "
                         f"{sum(p['predictions_agree'] for p in parity)} / {sum(p['examples'] for p in parity)} |")
        lines.append("")
    lat = results.get("latency")
    if lat:
        timing = lat["timing_s"]
        ref = "dense | pytorch fp32"
        lines += [f"CPU latency: {lat['cpu']}, {lat['threads']} threads (torch.set_num_threads and ONNX Runtime "
                  f"intra-op threads, worker spinning off), torch {torch.__version__}; fastest of {lat['rounds']} "
                  f"interleaved rounds (medians in the JSON); random token ids, no padding; 1-minute load average "
                  f"{lat['load_before'][0]:.1f} before and {lat['load_after'][0]:.1f} after, on "
                  f"{os.cpu_count()} cores (this run's own threads included).", "",
                  "Speed-up over dense PyTorch fp32 measured in the same rounds (higher is faster; dense PyTorch "
                  "in ms in the first row). A cell marked * is slower than a variant it should beat (listed below):",
                  "", "| model | runtime | " + " | ".join(f"batch {b}, len {l}" for b, l in SHAPES) + " |",
                  "|---|---|" + "---|" * len(SHAPES),
                  "| dense (ms) | PyTorch fp32 | " + " | ".join(f"{1000 * timing[f'{b}x{l}'][ref]:.1f}" for b, l in SHAPES) + " |"]
        slower = []
        for name, runtime in VARIANTS:
            key = f"{name} | {runtime}"
            cells = []
            for b, l in SHAPES:
                t = timing[f"{b}x{l}"]
                losers = [r for r in should_beat(name, runtime) if t[key] > t[f"{r[0]} | {r[1]}"]]
                for r in losers:
                    slower.append(f"{name} {runtime} at batch {b}, length {l}: {1000 * t[key]:.1f} ms, slower than "
                                  f"{r[0]} {r[1]} ({1000 * t[f'{r[0]} | {r[1]}']:.1f} ms)")
                cells.append(f"{t[ref] / t[key]:.2f}x" + ("*" if losers else ""))
            lines.append(f"| {name} | {runtime.replace('onnxruntime', 'ORT').replace('pytorch', 'PyTorch')} | "
                         + " | ".join(cells) + " |")
        lines += ["", "Slower than what it should beat: " + ("none." if not slower else "")]
        lines += [f"- {s}" for s in slower]
        plot(args, results)
    markdown = "\n".join(lines) + "\n"
    (HERE / "results" / f"deploy-{args.preset}.md").write_text(markdown)
    return markdown


def plot(args, results: dict) -> None:
    """Test accuracy against batch-32, length-128 latency, one point per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    timing = results["latency"]["timing_s"]["32x128"]
    fig, ax = plt.subplots(figsize=(9.5, 4.5))
    markers = {"pytorch fp32": "o", "onnxruntime fp32": "s", "onnxruntime int8": "^"}
    colors = {"dense": "black", "mlpruning-0.5": "tab:blue", "mlpruning-0.2": "tab:orange", "spp-0.5": "tab:green"}
    for name, runtime in VARIANTS:
        if name not in results["accuracy"]:
            continue
        x = 1000 * timing[f"{name} | {runtime}"]
        y = 100 * results["accuracy"][name][f"{runtime}/test"]
        ax.scatter(x, y, marker=markers[runtime], color=colors[name], s=50, label=f"{name}, {runtime}")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("CPU latency, batch 32 x 128 tokens, 2 threads (ms, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("MiniLM-L6, movie sentiment: accuracy against latency")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(HERE / "results" / f"deploy-{args.preset}.png", dpi=120)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(structured_bench.PRESETS), default="smoke")
    parser.add_argument("--work-dir", default=str(HERE.parent / "runs" / "bench"))
    parser.add_argument("--stage", choices=["train", "export", "accuracy", "latency", "report", "all"], default="all")
    parser.add_argument("--models", nargs="*", choices=MODELS, default=MODELS)
    parser.add_argument("--train-threads", type=int, default=1, help="torch threads while training")
    parser.add_argument("--latency-threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    results = load_results(args)
    every = args.stage == "all"
    if args.stage == "train" or every:
        torch.set_num_threads(args.train_threads)
        for name in args.models:
            print(f"== {args.preset}: {name}", flush=True)
            print(f"   {train(args, name)}  ({hardware_summary()}, load {os.getloadavg()[0]:.1f})", flush=True)
    if args.stage == "export" or every:
        torch.set_num_threads(args.train_threads)
        export_all(args, results)
    if args.stage == "accuracy" or every:
        torch.set_num_threads(args.train_threads)
        accuracy_all(args, results)
    if args.stage == "latency" or every:
        latency_all(args, results)
    print(report(args, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
