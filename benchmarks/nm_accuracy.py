"""N:M accuracy benchmark: every method on the same data, seeds and budget, side by side.

For each seed the dense model is fine-tuned once and reused by every method and pattern. The retraining
methods (magnitude + retrain, SR-STE, ADMM, ADMM + SR-STE) all get the same total number of epochs.
Each finished run is appended to ``results/nm_accuracy-<preset>.jsonl`` so an interrupted sweep picks up
where it stopped; the table (mean +- std over seeds) goes to ``results/nm_accuracy-<preset>.md``/``.json``.
The same run also times ADMM and SR-STE training steps against dense steps on identical batches.

    python benchmarks/nm_accuracy.py --preset quick            # ~70 min on 2 CPU cores
    python benchmarks/nm_accuracy.py --preset smoke            # ~3 min, checks the script end to end
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from pruneformer.report import hardware_summary
from pruneformer.methods import ADMMPruner, SRSTEPruner
from pruneformer.pipeline import run
from pruneformer.recipe import build_recipe

HERE = Path(__file__).resolve().parent
METHODS = ["dense", "magnitude", "magnitude-retrain", "srste", "admm", "admm-srste"]
PATTERNS = ["2:4", "1:4", "4:8"]
#: preset -> data sizes, dense fine-tune, pruning budget (epochs, shared by every retraining method), lr,
#: ADMM Z/U interval (steps) and seeds. "standard" is the peer-toolkit setting of shared/offline-assets.md.
PRESETS = {
    "smoke": dict(max_train=256, max_eval=200, dense_epochs=1.0, lr=1e-4, budget=1.0, interval=2, seeds=[0]),
    "quick": dict(max_train=2000, max_eval=1000, dense_epochs=2.0, lr=1e-4, budget=1.0, interval=4, seeds=[0, 1, 2]),
    "standard": dict(max_train=8000, max_eval=1000, dense_epochs=1.0, lr=5e-5, budget=1.0, interval=16, seeds=[0, 1, 2]),
    "full": dict(max_train=None, max_eval=None, dense_epochs=1.0, lr=5e-5, budget=2.0, interval=30, seeds=[0, 1, 2]),
}


def base_recipe(preset: dict, seed: int, out: Path, args) -> dict:
    return {
        "model": "embedded", "seed": seed, "output_dir": str(out),
        "data": {"source": "embedded", "max_length": 64, "max_train": preset["max_train"], "max_eval": preset["max_eval"]},
        "dense": {"epochs": preset["dense_epochs"], "lr": preset["lr"]},
        "prune": {"epochs": preset["budget"], "lr": args.lr or preset["lr"]},
        "admm": {"interval": preset["interval"], "rho": args.rho, "rho_schedule": args.rho_schedule,
                 "rho_max": args.rho_max, "penalty": args.penalty},
        "distill": {"enabled": args.distill},
        "train": {"batch_size": 32, "checkpoint_every": 1000},
    }


def run_one(preset: dict, seed: int, method: str, pattern: str, root: Path, dense_root: Path, args) -> dict:
    """One pruning run; every variant of a preset reuses the preset's dense model of that seed."""
    dense_dir = dense_root / f"seed{seed}" / "dense"
    out = dense_dir if method == "dense" else root / f"seed{seed}" / f"{method}-{pattern.replace(':', 'of')}"
    recipe = base_recipe(preset, seed, out, args)
    recipe["prune"].update(method=method, pattern="2:4" if method == "dense" else pattern)
    if method != "dense":
        recipe["dense"].update(epochs=0.0, checkpoint=str(dense_dir / "model"))
    resume = (out / "run_state.json").is_file()
    report = run(build_recipe(recipe), resume=resume, progress=False, log=lambda line: print("   ", line, flush=True))
    metric = report["primary_metric"]
    return {"seed": seed, "method": method, "pattern": "dense" if method == "dense" else pattern,
            "dev": report["pruned"]["dev"][metric], "test": report["pruned"].get("test", {}).get(metric),
            "dense_dev": report["dense"]["dev"][metric], "metric": metric,
            "prune_wall_s": sum(p["wall_time_s"] for p in report["phases"] if p["name"] != "dense")}


def step_time_ratio(root: Path, preset: dict, steps: int = 12) -> dict:
    """Time dense, ADMM and SR-STE training steps on the same batches, interleaved, in this process."""
    from transformers import DataCollatorWithPadding

    from pruneformer.data import tokenize_bundle
    from pruneformer.io import load_pruned_model
    from pruneformer.pipeline import prepare_data
    from pruneformer.recipe import DataConfig
    from pruneformer.targets import resolve_targets
    from pruneformer.training import make_optimizer

    model, tokenizer, _ = load_pruned_model(root / "seed0" / "dense" / "model")
    bundle = tokenize_bundle(prepare_data(DataConfig(max_train=32 * steps, max_eval=32), 0), tokenizer, 64)
    collate = DataCollatorWithPadding(tokenizer)
    rows = bundle.train.to_list()
    batches = [collate(rows[i : i + 32]) for i in range(0, 32 * steps, 32)]
    targets = resolve_targets(model)
    methods = {"dense": None, "admm": ADMMPruner("2:4", interval=4), "srste": SRSTEPruner("2:4")}
    times: dict[str, list[float]] = {k: [] for k in methods}
    model.train()
    optimizer = make_optimizer(model, 1e-5, 0.01)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for repeat in range(2):
        for name, method in methods.items():
            model.load_state_dict(state)
            if method is not None:
                method.attach(model, targets)
            for i, batch in enumerate(batches):
                t0 = time.perf_counter()
                if method: method.before_forward(i)
                model(**batch).loss.backward()
                if method: method.after_backward(i)
                optimizer.step(); optimizer.zero_grad()
                if method: method.after_optimizer_step(i)
                if i >= 2:  # skip warm-up steps
                    times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"dense_step_s": med["dense"], "admm_step_s": med["admm"], "srste_step_s": med["srste"],
            "admm_over_dense": med["admm"] / med["dense"], "srste_over_dense": med["srste"] / med["dense"],
            "steps_timed": len(times["dense"]), "batch": "32 x <=64 tokens"}


def summarise(records: list[dict], preset_name: str, preset: dict, timing: dict | None, args) -> tuple[str, dict]:
    table: dict[str, dict[str, dict]] = {}
    for r in records:
        cell = table.setdefault(r["pattern"], {}).setdefault(r["method"], {"dev": [], "test": [], "seeds": []})
        cell["dev"].append(r["dev"]); cell["test"].append(r["test"]); cell["seeds"].append(r["seed"])

    def ms(values):
        values = [v for v in values if v is not None]
        if not values:
            return "-"
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{100 * statistics.mean(values):.2f} ± {100 * sd:.2f}"

    lines = [f"Preset `{preset_name}` (train {preset['max_train'] or 'all'}, dev/test {preset['max_eval'] or 'all'}, "
             f"dense {preset['dense_epochs']} epoch(s), lr {args.lr or preset['lr']}, pruning budget {preset['budget']} epoch(s), ADMM interval "
             f"{preset['interval']} steps, rho {args.rho} {args.rho_schedule} (max {args.rho_max}), penalty "
             f"{args.penalty}, distill {args.distill}); seeds {sorted({r['seed'] for r in records})}; {hardware_summary()}.",
             "", "Accuracy (%) on the held-out test split, mean ± std over seeds (dev in brackets):", "",
             "| pattern | method | test | dev | n |", "|---|---|---|---|---|"]
    for pattern in ["dense"] + PATTERNS:
        for method in METHODS:
            cell = table.get(pattern, {}).get(method)
            if cell:
                lines.append(f"| {pattern} | {method} | {ms(cell['test'])} | ({ms(cell['dev'])}) | {len(cell['seeds'])} |")
    if timing:
        lines += ["", f"Training-step time, same batches, same process: ADMM / dense = {timing['admm_over_dense']:.3f}, "
                      f"SR-STE / dense = {timing['srste_over_dense']:.3f} (dense step {timing['dense_step_s']:.3f} s, "
                      f"{timing['batch']}, median of {timing['steps_timed']} steps)."]
    return "\n".join(lines) + "\n", {"preset": preset_name, "settings": preset, "args": vars(args), "hardware": hardware_summary(),
                                     "records": records, "timing": timing}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    parser.add_argument("--seeds", type=int, nargs="*", help="override the preset's seeds")
    parser.add_argument("--patterns", nargs="*", default=PATTERNS)
    parser.add_argument("--methods", nargs="*", default=METHODS)
    parser.add_argument("--lr", type=float, default=None, help="pruning-phase lr (default: the preset's)")
    parser.add_argument("--rho", type=float, default=1e-3)
    parser.add_argument("--rho-schedule", default="geometric")
    parser.add_argument("--rho-max", type=float, default=0.1)
    parser.add_argument("--penalty", default="gradient")
    parser.add_argument("--distill", action="store_true", help="distil from the dense model in every retraining method")
    parser.add_argument("--budget", type=float, help="override the preset's pruning budget (epochs)")
    parser.add_argument("--interval", type=int, help="override the preset's ADMM Z/U interval (steps)")
    parser.add_argument("--tag", default="", help="suffix for the results files (variants of one preset)")
    parser.add_argument("--work-dir", default=str(HERE.parent / "runs" / "bench"))
    parser.add_argument("--no-timing", action="store_true")
    args = parser.parse_args()
    preset = dict(PRESETS[args.preset])
    if args.seeds:
        preset["seeds"] = args.seeds
    if args.budget:
        preset["budget"] = args.budget
    if args.interval:
        preset["interval"] = args.interval
    name = args.preset + (f"-{args.tag}" if args.tag else "")
    root = Path(args.work_dir) / name
    results = HERE / "results"
    results.mkdir(parents=True, exist_ok=True)
    log_path = results / f"nm_accuracy-{name}.jsonl"
    records = [json.loads(l) for l in log_path.read_text().splitlines()] if log_path.is_file() else []
    done = {(r["seed"], r["method"], r["pattern"]) for r in records}
    for seed in preset["seeds"]:
        plan = [("dense", "dense")] + [(m, p) for p in args.patterns for m in args.methods if m != "dense"]
        for method, pattern in plan:
            if (seed, method, pattern) in done:
                continue
            print(f"[seed {seed}] {method} {pattern}", flush=True)
            record = run_one(preset, seed, method, pattern, root, Path(args.work_dir) / args.preset, args)
            records.append(record)
            with log_path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
            print(f"    -> dev {record['dev']:.4f} test {record['test']:.4f}", flush=True)
    timing = None if args.no_timing else step_time_ratio(Path(args.work_dir) / args.preset, preset)
    markdown, payload = summarise(records, name, preset, timing, args)
    (results / f"nm_accuracy-{name}.md").write_text(markdown)
    (results / f"nm_accuracy-{name}.json").write_text(json.dumps(payload, indent=2))
    print(markdown)


if __name__ == "__main__":
    sys.exit(main())
