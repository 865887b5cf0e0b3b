"""Structured pruning benchmark: MLPruning vs the L1 head/neuron baseline, accuracy and CPU latency.

Accuracy: for each remaining fraction and seed, ``mlpruning`` and ``l1-structured`` start from the same
dense fine-tuned model and get the same budget (``prune.epochs``) and the same distillation (logits and
hidden states; MLPruning adds its attention term). Every finished run is appended to
``results/structured-<preset>.jsonl`` so an interrupted sweep resumes where it stopped.

Latency (``--latency``): the dense model and the pruned models of seed 0, forward passes on CPU with
``torch.set_num_threads(2)``, batch 1 and 32, lengths 64 and 128, interleaved round by round in one process
and reported as ratios to dense. The block-sparse stage: the shrunk 0.5 model with lowest-L1 32x32 blocks
zeroed (keep 0.5 and 0.3 of the blocks), run with dense kernels (zeros and all) against torch BSR kernels.

    python benchmarks/structured.py --preset quick             # accuracy sweep (background it: nohup)
    python benchmarks/structured.py --preset quick --latency   # latency of the models the sweep left
    python benchmarks/structured.py --preset smoke             # a few minutes, checks the script end to end
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
from structured_latency import latency  # noqa: E402  (benchmarks/structured_latency.py, beside this file)
from structured_tables import BLOCK_KEEP, METHODS, summarise_accuracy  # noqa: E402  (the sweep's tables, beside this file)

from pruneformer.deploy.hardware import int8_saturates
from pruneformer.runs.pipeline import run
from pruneformer.runs.recipe import build_recipe
from pruneformer.runs.report import hardware_summary

HERE = Path(__file__).resolve().parent
#: ``mlpruning-block``: MLPruning's full two steps (the paper's recipe): head + row pruning to
#: ``fraction / BLOCK_KEEP``, shrink with rows rounded to 32, then 32x32 block pruning keeping BLOCK_KEEP of
#: the shrunk model, the step-2 model as teacher; half the budget each. Run at 0.3 (0.5 x 0.6, as the paper).
DEFAULT_METHODS = {"mlpruning-block": [0.3]}  # method -> the only fractions it runs at by default
#: preset -> data sizes, dense fine-tune (as nm_accuracy's presets, so their dense models can be reused),
#: pruning budget in epochs (shared by both methods), lr, MLPruning's threshold start and score lr, seeds
#: and fractions (run in this order: the 0.5 must-show first).
PRESETS = {
    "smoke": dict(max_train=256, max_eval=200, dense_epochs=1.0, lr=1e-4, budget=1.0, finetune=0.25,
                  threshold_init=3.0, score_lr=None, seeds=[0], fractions=[0.5]),
    "quick": dict(max_train=2000, max_eval=1000, dense_epochs=2.0, lr=1e-4, budget=2.0, finetune=0.5,
                  threshold_init=3.0, score_lr=0.2, seeds=[0, 1, 2], fractions=[0.5, 0.2, 0.3]),
    # the whole 8,568-sentence train split, nm_accuracy's standard dense models; MLPruning at its defaults
    # (threshold init 10, score lr fitted to the budget); --budget sets the epochs of a budget curve's point
    "standard": dict(max_train=None, max_eval=1000, dense_epochs=1.0, lr=5e-5, budget=2.0, finetune=0.0,
                     threshold_init=10.0, score_lr=None, seeds=[0, 1, 2], fractions=[0.5, 0.2]),
}


def dense_dir(args, preset_name: str, seed: int) -> Path:
    """A finished dense model of this preset and seed: nm_accuracy's if it left one, else ours."""
    shared = Path(args.work_dir) / preset_name / f"seed{seed}" / "dense"
    if (shared / "report.json").is_file() and (shared / "model" / "model.safetensors").is_file():
        return shared
    return Path(args.work_dir) / f"structured-{preset_name}" / f"seed{seed}" / "dense"


def dense_model_of(record: dict, preset_name: str) -> Path:
    """The dense model a sweep record started from (for scripts that read the records: latency, int8 choices)."""
    work_dir = Path(record["model_dir"]).parents[3]  # <work>/structured-<name>/seed<S>/<run>/model
    return dense_dir(argparse.Namespace(work_dir=work_dir), preset_name, record["seed"]) / "model"


def base_recipe(preset: dict, seed: int, out: Path) -> dict:
    return {
        "model": "embedded", "seed": seed, "output_dir": str(out),
        "data": {"source": "embedded", "max_length": 64, "max_train": preset["max_train"], "max_eval": preset["max_eval"]},
        "dense": {"epochs": preset["dense_epochs"], "lr": preset["lr"]},
        "prune": {"epochs": preset["budget"], "lr": preset["lr"]},
        "train": {"batch_size": 32, "checkpoint_every": 1000},
    }


def log(line: str) -> None:
    print("   ", line, flush=True)


def ensure_dense(args, preset_name: str, preset: dict, seed: int) -> Path:
    directory = dense_dir(args, preset_name, seed)
    if not (directory / "report.json").is_file():
        recipe = base_recipe(preset, seed, directory)
        recipe["prune"].update(method="dense")
        run(build_recipe(recipe), resume=(directory / "run_state.json").is_file(), progress=False, log=log)
    return directory


def seed_from(args, preset_name: str, out: Path, seed: int, run_name: str) -> str | None:
    """``--steps-from TAG``: start ``out`` from that sweep's finished run of the same seed and method (its run
    state and stage snapshots, hard-linked), so only the stages it lacks run (the QAT stage). The source's
    budget must be this sweep's: the recipe's ``prune.epochs`` is not checked on resume."""
    if not args.steps_from or (out / "run_state.json").is_file():
        return None
    import shutil

    source = Path(args.work_dir) / f"structured-{preset_name}-{args.steps_from}" / f"seed{seed}" / run_name
    if not (source / "run_state.json").is_file() or not (source / "model").is_dir():
        raise SystemExit(f"--steps-from {args.steps_from}: no finished run in {source}; run that sweep first")
    out.mkdir(parents=True, exist_ok=True)

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source / "checkpoints", out / "checkpoints", copy_function=link, dirs_exist_ok=True)
    state = json.loads((source / "run_state.json").read_text())
    state["done"] = {k: v for k, v in state["done"].items() if not k.startswith("phase2-qat")}
    (out / "run_state.json").write_text(json.dumps(state))
    return str(source)


def run_one(args, preset_name: str, preset: dict, seed: int, method: str, fraction: float) -> dict:
    dense = ensure_dense(args, preset_name, preset, seed)
    out = Path(args.work_dir) / f"structured-{preset_name}{tag_suffix(args)}" / f"seed{seed}" / f"{method}-{fraction:g}"
    source = seed_from(args, preset_name, out, seed, f"{method}-{fraction:g}")
    recipe = base_recipe(preset, seed, out)
    if preset.get("qat"):
        recipe["qat"] = {"epochs": preset["qat"], "per_channel": preset["per_channel"]}
    recipe["dense"].update(epochs=0.0, checkpoint=str(dense / "model"))
    recipe["prune"]["method"] = "mlpruning" if method == "mlpruning-block" else method
    recipe["mlpruning"] = {"target": fraction, "threshold_init": preset["threshold_init"],
                           "finetune_epochs": preset["finetune"] if method == "mlpruning" else 0.0}
    if preset["score_lr"] is not None:
        recipe["mlpruning"]["score_lr"] = preset["score_lr"]
    if method == "mlpruning-block":
        recipe["mlpruning"].update(block_keep=BLOCK_KEEP, block_size=32)
    if method == "fisher-structured" and args.allocation:
        recipe.setdefault("calibration", {})["allocation"] = args.allocation
    built = build_recipe(recipe)
    report = run(built, resume=(out / "run_state.json").is_file(), progress=False, log=log)
    metric = report["primary_metric"]
    s = report["structured"]
    before = {}
    if preset.get("qat"):  # the same model before its QAT stage, deployed the same way
        snapshot = out / "checkpoints" / report["phases"][-2]["name"]
        before = {f"{k}_before_qat": v for k, v in deployed_scores(snapshot, preset, seed, metric).items()}
    return {"seed": seed, "method": method, "fraction": fraction, "dev": report["pruned"]["dev"][metric],
            "test": report["pruned"].get("test", {}).get(metric), "dense_dev": report["dense"]["dev"][metric],
            "dense_test": report["dense"].get("test", {}).get(metric), "metric": metric,
            "remaining": s["remaining_fraction"], "kept_per_layer": s["kept_per_layer"],
            "model_dir": report["model_dir"], "prune_wall_s": sum(p["wall_time_s"] for p in report["phases"][1:]),
            "warnings": report["warnings"], "budget": preset["budget"], "qat": preset.get("qat", 0.0),
            "hardware": hardware_summary(), "int8_saturates": int8_saturates(),
            "int8_per_channel": preset["per_channel"], "steps_from": source,
            **({"rescale": built.calibration.rescale, "allocation": built.calibration.allocation}
               if method == "fisher-structured" else {}),
            "qat_wall_s": next((p["wall_time_s"] for p in report["phases"] if p["name"] == "phase2-qat"), None),
            **deployed_scores(report["model_dir"], preset, seed, metric), **before,
            **dense_int8(dense, preset, seed, metric)}


def deployed_dir(model_dir: str | Path, per_channel: bool) -> Path:
    """Where a model's int8 export of one scheme goes: ``<model>-onnx`` (per tensor, the first sweeps'), or
    ``<model>-onnx-per-channel``."""
    from pruneformer.compare.report import onnx_dir

    out = onnx_dir(model_dir)
    return out.with_name(out.name + "-per-channel") if per_channel else out


def deployed_scores(model_dir: str | Path, preset: dict, seed: int, metric: str) -> dict:
    """Dev and test accuracy of the model as deployed: ``pruneformer export --quantize int8`` (dynamic int8,
    classifier fp32; per tensor as every record of the first sweeps, per channel with ``--per-channel``),
    scored by ONNX Runtime on the same splits as the PyTorch model."""
    from pruneformer.deploy.export import export_model
    from pruneformer.deploy.runtime import score

    per_channel = preset["per_channel"]
    out = deployed_dir(model_dir, per_channel)
    if not (out / "model.int8.onnx").is_file():
        export_model(model_dir, out, quantize="int8", per_channel=per_channel, log=lambda line: None)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)
    splits = embedded_splits(tokenizer, seed, preset["max_train"], preset["max_eval"])
    return {f"int8_{name}": score(out / "model.int8.onnx", split, tokenizer, [metric])[metric]
            for name, split in (("dev", splits.dev), ("test", splits.test))}


def embedded_splits(tokenizer, seed: int, max_train: int | None = None, max_eval: int | None = 1000):
    """The embedded movie-review splits of ``seed`` as every sweep here cuts them (max length 64), tokenized:
    the one place the benchmark scripts that score saved models (deploy, int8 choices, sensitivity) read them."""
    from pruneformer.data import tokenize_bundle
    from pruneformer.runs.engine import prepare_data
    from pruneformer.runs.recipe import DataConfig

    data = DataConfig(source="embedded", max_length=64, max_train=max_train, max_eval=max_eval)
    return tokenize_bundle(prepare_data(data, seed), tokenizer, 64)


def dense_int8(dense: Path, preset: dict, seed: int, metric: str) -> dict:
    """The seed's dense model deployed the same way (cached beside it): the quantize-only answer."""
    cache = dense / ("int8_scores_per_channel.json" if preset["per_channel"] else "int8_scores.json")
    if not cache.is_file():
        cache.write_text(json.dumps(deployed_scores(dense / "model", preset, seed, metric)))
    return {f"dense_{k}": v for k, v in json.loads(cache.read_text()).items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="smoke")
    parser.add_argument("--work-dir", default=str(HERE.parent / "runs" / "bench"))
    parser.add_argument("--fractions", type=float, nargs="*", help="override the preset's fractions")
    parser.add_argument("--seeds", type=int, nargs="*", help="override the preset's seeds")
    parser.add_argument("--methods", nargs="*", choices=METHODS, default=METHODS)
    parser.add_argument("--methods-everywhere", action="store_true",
                        help="run mlpruning-block at every fraction, not only at 0.3")
    parser.add_argument("--tag", default="", help="suffix of the results files and run directories (probes)")
    parser.add_argument("--finetune", type=float, help="override the preset's MLPruning fine-tune epochs")
    parser.add_argument("--score-lr", type=float, help="override the preset's MLPruning score lr")
    parser.add_argument("--allocation", choices=["share", "search"], help="fisher-structured's calibration.allocation "
                        "(default share; use a --tag)")
    parser.add_argument("--budget", type=float, help="override the preset's pruning budget (epochs; use a --tag)")
    parser.add_argument("--qat", type=float, help="epochs of quantization-aware fine-tuning after the budget "
                        "(qat.epochs; use a --tag); the records add the int8 scores before it")
    parser.add_argument("--per-channel", action="store_true", help="deploy (and QAT) with per-channel int8 "
                        "weights, export's default (the first sweeps' records are per tensor)")
    parser.add_argument("--steps-from", metavar="TAG", help="start each run from that tag's finished run of the "
                        "same seed and method (same --budget): with --qat, only the QAT stage runs")
    parser.add_argument("--rescore-int8", action="store_true", help="export every record's model again and score "
                        "its int8 afresh (records made before the export kept empty products fp32; the old scores "
                        "stay as int8_*_stale)")
    parser.add_argument("--latency", action="store_true", help="time the models the accuracy sweep left")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--train-threads", type=int, default=1, help="torch threads of the accuracy sweep")
    parser.add_argument("--latency-threads", type=int, default=2, help="torch threads of the latency runs")
    args = parser.parse_args()
    preset = dict(PRESETS[args.preset])
    if args.fractions:
        preset["fractions"] = args.fractions
    if args.seeds is not None:
        preset["seeds"] = args.seeds
    for key in ("finetune", "score_lr", "budget", "qat"):
        if getattr(args, key) is not None:
            preset[key] = getattr(args, key)
    preset["per_channel"] = args.per_channel
    name = args.preset + tag_suffix(args)
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    jsonl = results / f"structured-{name}.jsonl"
    records = read_records(jsonl)
    if args.rescore_int8:
        torch.set_num_threads(args.train_threads)
        print(rescore_int8(jsonl, preset, results, name))
        return 0
    if args.latency:
        markdown, data = latency(args, args.preset, preset, records, dense_dir(args, args.preset, 0) / "model", METHODS)
        tag = "" if args.latency_threads == 2 else f"-{args.latency_threads}thread"
        (results / f"structured-latency-{args.preset}{tag}.md").write_text(markdown)
        (results / f"structured-latency-{args.preset}{tag}.json").write_text(json.dumps(data, indent=2))
        print(markdown)
        return 0
    # one thread: on a CPU shared with other jobs two OpenMP threads wait on each other at every barrier
    # (a MiniLM training step measured 2.3 s on one thread against 4.4 to 8.4 s on two, same load)
    torch.set_num_threads(args.train_threads)
    done = {(r["seed"], r["method"], r["fraction"]) for r in records}
    for fraction in preset["fractions"]:
        for seed in preset["seeds"]:
            for method in args.methods:
                if fraction not in DEFAULT_METHODS.get(method, [fraction]) and not args.methods_everywhere:
                    continue
                if (seed, method, fraction) in done:
                    continue
                print(f"== {args.preset}: seed {seed}, {method}, remaining {fraction:g}", flush=True)
                record = run_one(args, args.preset, preset, seed, method, fraction)
                with jsonl.open("a") as handle:
                    handle.write(json.dumps(record) + "\n")
                # re-read: other shards of the sweep (other --seeds/--fractions) append to the same file
                records = read_records(jsonl)
                write_summary(results, name, preset, records)
    if not records:
        print("no runs")
        return 0
    # once more at the end, so a call with nothing left to run regenerates the tables from the JSONL
    records = read_records(jsonl)
    print(write_summary(results, name, preset, records))
    return 0


def rescore_int8(jsonl: Path, preset: dict, results: Path, name: str) -> str:
    """Every record's model exported and its int8 scored again with today's export, in the record's scheme
    (``int8_per_channel``; absent: per tensor). Why: before ``deploy.quantize.empty_products`` a layer with no
    head (or no FFN unit) ran ONNX Runtime's int8 product on an empty tensor and got garbage; the old scores
    are kept as ``int8_dev_stale`` / ``int8_test_stale``. Records are rewritten in place, atomically."""
    import shutil


    records = read_records(jsonl)
    for index, record in enumerate(records):
        scheme = dict(preset, per_channel=bool(record.get("int8_per_channel")))
        shutil.rmtree(deployed_dir(record["model_dir"], scheme["per_channel"]), ignore_errors=True)
        if "int8_test_stale" not in record:
            record["int8_dev_stale"], record["int8_test_stale"] = record.get("int8_dev"), record.get("int8_test")
        record.update(deployed_scores(record["model_dir"], scheme, record["seed"], record["metric"]))
        print(f"   {index + 1}/{len(records)} seed {record['seed']} {record['method']} {record['fraction']:g}: int8 test "
              f"{record['int8_test_stale']} -> {record['int8_test']}", flush=True)
    tmp = jsonl.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    tmp.replace(jsonl)
    return write_summary(results, name, preset, records)


def read_records(jsonl: Path) -> list[dict]:
    """Every finished run of a sweep (all shards append to the same file)."""
    return [json.loads(line) for line in jsonl.read_text().splitlines()] if jsonl.is_file() else []


def tag_suffix(args) -> str:
    """``-<tag>`` for probes (their own results files and run directories, the same dense models), else ''."""
    return f"-{args.tag}" if args.tag else ""


def write_summary(results: Path, preset_name: str, preset: dict, records: list[dict]) -> str:
    markdown, summary = summarise_accuracy(records, preset_name, preset)
    (results / f"structured-{preset_name}.md").write_text(markdown)
    (results / f"structured-{preset_name}.json").write_text(json.dumps(
        {"preset": preset_name, "settings": preset, "hardware": hardware_summary(), "summary": summary,
         "records": records}, indent=2))
    return markdown


if __name__ == "__main__":
    sys.exit(main())
