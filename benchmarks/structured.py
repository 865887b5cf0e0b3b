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
import statistics
import sys
from pathlib import Path

import torch
from torch import nn

from pruneformer.deploy.latency import time_models
from pruneformer.runs.pipeline import run
from pruneformer.runs.recipe import build_recipe
from pruneformer.runs.report import hardware_summary

HERE = Path(__file__).resolve().parent
METHODS = ["mlpruning", "l1-structured", "mlpruning-block", "fisher-structured"]
#: ``mlpruning-block``: MLPruning's full two steps (the paper's recipe): head + row pruning to
#: ``fraction / BLOCK_KEEP``, shrink with rows rounded to 32, then 32x32 block pruning keeping BLOCK_KEEP of
#: the shrunk model, the step-2 model as teacher; half the budget each. Run at 0.3 (0.5 x 0.6, as the paper).
BLOCK_KEEP = 0.6
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


def run_one(args, preset_name: str, preset: dict, seed: int, method: str, fraction: float) -> dict:
    dense = ensure_dense(args, preset_name, preset, seed)
    out = Path(args.work_dir) / f"structured-{preset_name}{tag_suffix(args)}" / f"seed{seed}" / f"{method}-{fraction:g}"
    recipe = base_recipe(preset, seed, out)
    recipe["dense"].update(epochs=0.0, checkpoint=str(dense / "model"))
    recipe["prune"]["method"] = "mlpruning" if method == "mlpruning-block" else method
    recipe["mlpruning"] = {"target": fraction, "threshold_init": preset["threshold_init"],
                           "finetune_epochs": preset["finetune"] if method == "mlpruning" else 0.0}
    if preset["score_lr"] is not None:
        recipe["mlpruning"]["score_lr"] = preset["score_lr"]
    if method == "mlpruning-block":
        recipe["mlpruning"].update(block_keep=BLOCK_KEEP, block_size=32)
    report = run(build_recipe(recipe), resume=(out / "run_state.json").is_file(), progress=False, log=log)
    metric = report["primary_metric"]
    s = report["structured"]
    return {"seed": seed, "method": method, "fraction": fraction, "dev": report["pruned"]["dev"][metric],
            "test": report["pruned"].get("test", {}).get(metric), "dense_dev": report["dense"]["dev"][metric],
            "dense_test": report["dense"].get("test", {}).get(metric), "metric": metric,
            "remaining": s["remaining_fraction"], "kept_per_layer": s["kept_per_layer"],
            "model_dir": report["model_dir"], "prune_wall_s": sum(p["wall_time_s"] for p in report["phases"][1:]),
            "warnings": report["warnings"], "budget": preset["budget"],
            **deployed_scores(report["model_dir"], preset, seed, metric), **dense_int8(dense, preset, seed, metric)}


def deployed_scores(model_dir: str | Path, preset: dict, seed: int, metric: str) -> dict:
    """Dev and test accuracy of the model as deployed: ``pruneformer export --quantize int8`` (dynamic int8,
    classifier fp32), scored by ONNX Runtime on the same splits as the PyTorch model."""
    from pruneformer.compare.report import onnx_dir
    from pruneformer.data import tokenize_bundle
    from pruneformer.deploy.export import export_model
    from pruneformer.deploy.runtime import score
    from pruneformer.runs.engine import prepare_data
    from pruneformer.runs.recipe import DataConfig

    out = onnx_dir(model_dir)
    if not (out / "model.int8.onnx").is_file():
        # per tensor, as every record of this sweep so far (benchmarks/int8_choices.py measures per channel)
        export_model(model_dir, out, quantize="int8", per_channel=False, log=lambda line: None)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)
    data = DataConfig(source="embedded", max_length=64, max_train=preset["max_train"], max_eval=preset["max_eval"])
    splits = tokenize_bundle(prepare_data(data, seed), tokenizer, 64)
    return {f"int8_{name}": score(out / "model.int8.onnx", split, tokenizer, [metric])[metric]
            for name, split in (("dev", splits.dev), ("test", splits.test))}


def dense_int8(dense: Path, preset: dict, seed: int, metric: str) -> dict:
    """The seed's dense model deployed the same way (cached beside it): the quantize-only answer."""
    cache = dense / "int8_scores.json"
    if not cache.is_file():
        cache.write_text(json.dumps(deployed_scores(dense / "model", preset, seed, metric)))
    return {f"dense_{k}": v for k, v in json.loads(cache.read_text()).items()}


def summarise_accuracy(records: list[dict], preset_name: str, preset: dict) -> tuple[str, dict]:
    def ms(values):
        values = [100 * v for v in values if v is not None]
        if not values:
            return "-", None, None
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.2f} ± {sd:.2f}", statistics.mean(values), sd

    dense = {r["seed"]: (r["dense_dev"], r["dense_test"]) for r in records}
    lines = [f"Preset `{preset_name}` (train {preset['max_train'] or 'all (8,568)'}, dev/test {preset['max_eval']}, max length 64, "
             f"dense {preset['dense_epochs']} epoch(s), pruning budget {preset['budget']} epoch(s) for both methods "
             f"(MLPruning: {preset['budget'] - preset['finetune']:g} head/row + {preset['finetune']:g} fine-tune of the "
             f"shrunk model; MLPruning + blocks: {preset['budget'] / 2:g} head/row to fraction / {BLOCK_KEEP:g}, then "
             f"{preset['budget'] / 2:g} of 32x32 blocks keeping {BLOCK_KEEP:g}; L1: one-shot + {preset['budget']:g} retrain "
             f"of the shrunk model; kept FFN units and output rows aligned to 16), "
             f"lr {preset['lr']}, MLPruning threshold init {preset['threshold_init']}, score lr {preset['score_lr'] or 'fitted to the budget'}); "
             f"seeds {sorted(dense)}; {hardware_summary()}.", "",
             "Accuracy (%) on the held-out test split, mean ± std over seeds (dev in brackets); "
             "'kept' is the measured fraction of encoder Linear weights remaining; 'int8' is the model as deployed "
             "(`pruneformer export --quantize int8`: dynamic int8, classifier fp32) scored by ONNX Runtime; "
             "'int8 vs dense' is the mean ± std of the per-seed test difference to the dense fp32 model, "
             "'int8 cost' that of the model's own int8 to fp32 (points):", "",
             "| remaining | method | test | dev | int8 test | int8 vs dense | int8 cost | kept | n |",
             "|---|---|---|---|---|---|---|---|---|"]
    summary: dict = {"dense": {}}

    def paired(cell: list[dict], a: str, b: str) -> tuple[str, float | None]:
        diffs = [100 * (r[a] - r[b]) for r in cell if r.get(a) is not None and r.get(b) is not None]
        if not diffs:
            return "-", None
        sd = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
        return f"{statistics.mean(diffs):+.2f} ± {sd:.2f}", statistics.mean(diffs)

    firsts = list({r["seed"]: r for r in records}.values())
    test, mean, sd = ms([d[1] for d in dense.values()])
    dev, _, _ = ms([d[0] for d in dense.values()])
    i8, i8mean, _ = ms([r.get("dense_int8_test") for r in firsts])
    i8vs, _ = paired(firsts, "dense_int8_test", "dense_test")
    lines.append(f"| 1.0 | dense | {test} | ({dev}) | {i8} | {i8vs} | {i8vs} | 1.000 | {len(dense)} |")
    summary["dense"] = {"test_mean": mean, "test_std": sd, "int8_test_mean": i8mean, "n": len(dense)}
    fractions = sorted({r["fraction"] for r in records}, reverse=True)
    for fraction in fractions:
        for method in METHODS:
            cell = [r for r in records if r["fraction"] == fraction and r["method"] == method]
            if not cell:
                continue
            test, mean, sd = ms([r["test"] for r in cell])
            dev, dmean, _ = ms([r["dev"] for r in cell])
            i8, i8mean, _ = ms([r.get("int8_test") for r in cell])
            vs, vs_mean = paired(cell, "int8_test", "dense_test")
            cost, cost_mean = paired(cell, "int8_test", "test")
            kept = statistics.mean(r["remaining"] for r in cell)
            lines.append(f"| {fraction:g} | {method} | {test} | ({dev}) | {i8} | {vs} | {cost} | {kept:.3f} | {len(cell)} |")
            summary[f"{method}@{fraction:g}"] = {"test_mean": mean, "test_std": sd, "dev_mean": dmean,
                                                 "int8_test_mean": i8mean, "int8_vs_dense": vs_mean,
                                                 "int8_cost": cost_mean, "kept": kept, "n": len(cell),
                                                 "seeds": [r["seed"] for r in cell]}
    lines += ["", "MLPruning against the L1 baseline, same seeds (test points; 'spread' is the larger of the two methods' "
              "stds over seeds; 'paired std' is the std of the per-seed differences; 'wins' counts seeds where "
              "MLPruning's test accuracy is higher):", "",
              "| remaining | method | minus L1 | spread | beats L1 by more than the spread | paired std | wins |",
              "|---|---|---|---|---|---|---|"]
    for fraction in fractions:
        base = {r["seed"]: 100 * r["test"] for r in records if r["fraction"] == fraction and r["method"] == "l1-structured"}
        for method in ("mlpruning", "mlpruning-block"):
            ours = {r["seed"]: 100 * r["test"] for r in records if r["fraction"] == fraction and r["method"] == method}
            seeds = sorted(set(base) & set(ours))
            if not seeds:
                continue
            diffs = [ours[s] - base[s] for s in seeds]
            gap = statistics.mean(diffs)
            spread = max((statistics.stdev([d[s] for s in seeds]) if len(seeds) > 1 else 0.0) for d in (ours, base))
            paired = statistics.stdev(diffs) if len(seeds) > 1 else 0.0
            wins = sum(d > 0 for d in diffs)
            lines.append(f"| {fraction:g} | {method} | {gap:+.2f} | {spread:.2f} | "
                         f"{'yes' if gap > spread and len(seeds) > 1 else 'no'} | {paired:.2f} | {wins}/{len(seeds)} |")
            summary[f"{method}-vs-l1@{fraction:g}"] = {"gap": gap, "spread": spread, "paired_std": paired, "wins": wins,
                                                       "seeds": seeds}
    return "\n".join(lines) + "\n", summary


# -- latency ------------------------------------------------------------------------------------------
class BSRLinear(nn.Module):
    """A Linear whose weight is a torch BSR tensor (block-sparse kernel on CPU)."""

    def __init__(self, linear: nn.Linear, block: int) -> None:
        super().__init__()
        self.weight = linear.weight.detach().to_sparse_bsr((block, block))
        self.bias = linear.bias.detach() if linear.bias is not None else None
        self.out_features = linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        out = (self.weight @ flat.T).T
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)


@torch.no_grad()
def zero_blocks(model: nn.Module, keep: float, block: int) -> nn.Module:
    """Zero the lowest-L1 blocks of every encoder Linear, keeping ``keep`` of them (MLPruning's block level)."""
    from pruneformer.core.targets import resolve_targets

    for t in resolve_targets(model):
        w = t.module.weight
        if not w.numel():
            continue
        rows, cols = w.shape[0] // block, w.shape[1] // block
        norms = w.abs().reshape(rows, block, cols, block).sum((1, 3))
        mask = torch.zeros_like(norms, dtype=torch.bool).flatten()
        mask[norms.flatten().topk(max(1, round(keep * norms.numel()))).indices] = True
        w.mul_(mask.view(rows, cols).repeat_interleave(block, 0).repeat_interleave(block, 1))
    return model


def to_bsr(model: nn.Module, block: int) -> nn.Module:
    from pruneformer.core.targets import resolve_targets

    for t in resolve_targets(model):
        if not t.module.weight.numel():
            continue
        parent_name, _, child = t.name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, BSRLinear(t.module, block))
    return model


def latency(args, preset_name: str, preset: dict, records: list[dict]) -> tuple[str, dict]:
    import copy

    from pruneformer.compress import kept_encoder_weights, shrink_model
    from pruneformer.core.structure import LayerPlan
    from pruneformer.core.targets import resolve_targets
    from pruneformer.methods import L1StructuredPruner
    from pruneformer.models.saved import load_pruned_model

    torch.set_num_threads(args.latency_threads)
    dense, _, _ = load_pruned_model(dense_dir(args, preset_name, 0) / "model")
    dense.eval()
    vocab = dense.config.vocab_size
    base = kept_encoder_weights(dense)
    models: dict[str, nn.Module] = {"dense": dense,
                                    "dense as shrunk-bert (nothing removed)": shrink_model(dense, [LayerPlan()] * 6).eval()}
    kept: dict[str, float] = {}
    for fraction in preset["fractions"]:
        for method in METHODS:
            found = [r for r in records if r["seed"] == 0 and r["method"] == method and r["fraction"] == fraction]
            if found and Path(found[0]["model_dir"]).is_dir():
                model = load_pruned_model(found[0]["model_dir"])[0].eval()
                name = f"{method} {fraction:g}"
            elif method == "l1-structured":  # no trained model (yet): the one-shot L1 shape, untrained
                pruner = L1StructuredPruner(fraction)
                clone = copy.deepcopy(dense)
                pruner.attach(clone, resolve_targets(clone))
                pruner.finalize()
                model = shrink_model(pruner.model, pruner.layer_plans(dense.config.num_hidden_layers)).eval()
                name = f"l1 shape {fraction:g} (one-shot, untrained)"
            else:
                continue
            models[name] = model
            kept[name] = kept_encoder_weights(model) / base
    shapes = [(1, 64), (1, 128), (32, 64), (32, 128)]
    timing = time_models(models, shapes, args.rounds, vocab)

    # the block step runs on a shrunk model whose kept rows are rounded up to the block size: build that
    # shape from the dense model (L1 heads and units at 0.5, rounded to 32; timing depends on shapes only)
    pruner = L1StructuredPruner(0.5)
    clone = copy.deepcopy(dense)
    pruner.attach(clone, resolve_targets(clone))
    pruner.finalize()
    source = shrink_model(clone, pruner.layer_plans(dense.config.num_hidden_layers, round_to=32)).eval()
    block_models: dict[str, nn.Module] = {"shrunk 0.5, rows rounded to 32 (no blocks)": source}
    for keep in (0.5, 0.3):
        zeroed = zero_blocks(copy.deepcopy(source), keep, 32)
        block_models[f"+ {keep:g} of 32x32 blocks kept: dense kernels"] = zeroed
        block_models[f"+ {keep:g} of 32x32 blocks kept: torch BSR"] = to_bsr(copy.deepcopy(zeroed), 32)
    trained = [r for r in records if r["seed"] == 0 and r["method"] == "mlpruning-block" and Path(r["model_dir"]).is_dir()]
    if trained:  # the trained two-step model: its own zeroed blocks, dense kernels against BSR
        model = load_pruned_model(trained[0]["model_dir"])[0].eval()
        name = f"trained mlpruning-block {trained[0]['fraction']:g} (seed 0)"
        block_models[f"{name}: dense kernels"] = model
        block_models[f"{name}: torch BSR"] = to_bsr(copy.deepcopy(model), 32)
    block_timing = time_models(block_models, [(1, 128), (32, 128)], max(3, args.rounds // 2), vocab)

    lines = [f"CPU latency, {hardware_summary()} (torch.set_num_threads(2)); seed-0 models of preset `{preset_name}`; "
             f"fastest of {args.rounds} interleaved rounds per cell (medians in the JSON); 1-minute load "
             f"average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores when the run ended, this benchmark's own "
             f"threads included.", "",
             "Forward time as a ratio to the dense model measured in the same rounds (lower is faster); "
             "dense time in ms in the first row:", "",
             "| model | encoder weights stored | " + " | ".join(f"batch {b}, len {l}" for b, l in shapes) + " |",
             "|---|---|" + "---|" * len(shapes)]
    lines.append("| dense (ms) | 1.000 | " + " | ".join(f"{1000 * timing[f'{b}x{l}']['dense']:.1f}" for b, l in shapes) + " |")
    for name in models:
        if name == "dense":
            continue
        share = f"{kept[name]:.3f}" if name in kept else "1.000"
        lines.append(f"| {name} | {share} | " + " | ".join(
            f"{timing[f'{b}x{l}'][name] / timing[f'{b}x{l}']['dense']:.3f}" for b, l in shapes) + " |")
    if block_timing:
        lines += ["", "Block-sparse stage: a shrunk model keeping 0.5 of the encoder weights (rows rounded up to 32), "
                  "then the lowest-L1 32x32 blocks of every encoder Linear zeroed; forward time as a ratio to that "
                  "model with no blocks zeroed:", "",
                  "| model | batch 1, len 128 | batch 32, len 128 |", "|---|---|---|"]
        ref = "shrunk 0.5, rows rounded to 32 (no blocks)"
        for name in block_models:
            lines.append(f"| {name} | " + " | ".join(
                f"{block_timing[s][name] / block_timing[s][ref]:.3f}" for s in ("1x128", "32x128")) + " |")
    return "\n".join(lines) + "\n", {"timing_s": timing, "block_timing_s": block_timing, "kept": kept,
                                     "rounds": args.rounds, "hardware": hardware_summary()}


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
    parser.add_argument("--budget", type=float, help="override the preset's pruning budget (epochs; use a --tag)")
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
    for key in ("finetune", "score_lr", "budget"):
        if getattr(args, key) is not None:
            preset[key] = getattr(args, key)
    name = args.preset + tag_suffix(args)
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    jsonl = results / f"structured-{name}.jsonl"
    records = read_records(jsonl)
    if args.latency:
        markdown, data = latency(args, args.preset, preset, records)
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
