"""N:M accuracy benchmark: every method on the same data, seeds and budget, side by side.

For each seed the dense model is fine-tuned once and reused by every variant and pattern. The retraining
variants all spend the same total budget (``--budget`` epochs of pruning), except the rows that say
otherwise (the peer's 1-epoch ASP row and the budget curve). Each finished run is appended to
``results/nm_accuracy-<preset>.jsonl``, so an interrupted sweep picks up where it stopped; the table
(mean +- std over seeds, and each variant's mean per-seed difference to magnitude + retrain) goes to
``results/nm_accuracy-<preset>.md`` / ``.json``, the 1:4 budget curve to ``nm_budget-<preset>.png``.

    python benchmarks/nm_accuracy.py --preset standard --jobs 2          # CPU hours: run it in the background
    python benchmarks/nm_accuracy.py --preset smoke --jobs 1             # a few minutes, end to end
    python benchmarks/nm_accuracy.py --preset standard --budget-curve    # 1:4 at pruning budgets 1, 2, 4

The step-time ratio (ADMM and SR-STE against a dense step) times :func:`pruneformer.train.loop.train_step`,
the loop's own step, on identical batches, interleaved.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PATTERNS = ["2:4", "1:4", "4x4:8"]
#: preset -> data sizes, dense fine-tune, pruning budget (epochs shared by every retraining variant), lr,
#: ADMM Z/U interval (steps) and seeds. "standard" is the whole embedded train split (8,568 sentences).
PRESETS: dict[str, dict[str, Any]] = {
    "smoke": dict(max_train=256, max_eval=200, dense_epochs=1.0, lr=1e-4, budget=1.0, interval=2, seeds=[0]),
    "quick": dict(max_train=2000, max_eval=1000, dense_epochs=2.0, lr=1e-4, budget=1.0, interval=4, seeds=[0, 1, 2]),
    "lowdata": dict(max_train=1000, max_eval=1000, dense_epochs=3.0, lr=5e-5, budget=4.0, interval=8, seeds=[0, 1, 2]),
    "standard": dict(max_train=None, max_eval=1000, dense_epochs=1.0, lr=5e-5, budget=2.0, interval=30,
                     seeds=[0, 1, 2]),
}
#: distillation as the benchmark's "+kd" rows use it: logits (T=2, alpha 0.5) and hidden states.
KD = {"distill": {"enabled": True, "alpha": 0.5, "temperature": 2.0, "hidden_weight": 1.0}}
#: variant -> (method, recipe overrides). The overrides are merged into the preset's base recipe.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "dense": ("dense", {}),
    "magnitude": ("magnitude", {}),
    "magnitude-retrain": ("magnitude-retrain", {}),
    "magnitude-retrain-1ep": ("magnitude-retrain", {"prune": {"epochs": 1.0}}),  # torch.ao's ASP recipe, as the peer ran it
    "magnitude-retrain+kd": ("magnitude-retrain", KD),
    "srste": ("srste", {}),
    "srste+kd": ("srste", KD),
    "srste-paper": ("srste", {"srste": {"decay": "gradient"}}),  # lambda_w 2e-4 through AdamW: plain STE
    "admm": ("admm", {}),
    "admm+kd": ("admm", KD),
    "admm-short+kd": ("admm", {**KD, "admm": {"epochs_fraction": 0.25}}),
    "admm-long+kd": ("admm", {**KD, "admm": {"epochs_fraction": 0.75}}),
    "admm-srste+kd": ("admm-srste", KD),
    "admm-gentle": ("admm", {"admm": {"rho": 2e-3}}),  # a weaker start: room for the mask to move
    "admm-gentler": ("admm", {"admm": {"rho": 5e-4}}),
    "admm-gradient": ("admm", {"admm": {"penalty": "gradient", "rho": 1e-3, "rho_max": 0.1}}),  # the old default
    "admm-lr": ("admm", {"admm": {"pull": "lr", "score": "fisher"}}),  # the pull follows the lr; Z by |W+U| sqrt(F)
    # one-shot from calibration (512 training sentences, padding excluded), and the same masks retrained
    "alps": ("alps", {}),
    "sparsegpt": ("sparsegpt", {}),
    "wanda": ("wanda", {}),
    "alps-retrain": ("alps-retrain", {}),
    "sparsegpt-retrain": ("sparsegpt-retrain", {}),
}
#: methods that do not train after pruning: their rows have budget 0.
ONE_SHOT = {"magnitude", "alps", "sparsegpt", "wanda"}
#: in priority order: an interrupted sweep has the rows that matter most for every seed and pattern first.
DEFAULT_VARIANTS = ["dense", "magnitude", "magnitude-retrain", "admm+kd", "magnitude-retrain+kd", "srste+kd", "admm",
                    "admm-srste+kd", "srste", "magnitude-retrain-1ep"]
BUDGET_CURVE = dict(pattern="1:4", budgets=[1.0, 2.0, 4.0], seeds=[0, 1],
                    variants=["magnitude-retrain", "admm"])


def deep_merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def base_recipe(preset: dict, seed: int, out: Path, args) -> dict:
    return {
        "model": "embedded", "seed": seed, "output_dir": str(out),
        "data": {"source": "embedded", "max_length": 64, "max_train": preset["max_train"], "max_eval": preset["max_eval"]},
        "dense": {"epochs": preset["dense_epochs"], "lr": preset["lr"]},
        "prune": {"epochs": preset["budget"], "lr": args.lr or preset["lr"]},
        "admm": {"interval": preset["interval"], "eval_every": 3},
        "train": {"batch_size": 32, "checkpoint_every": args.checkpoint_every},
    }


def run_key(job: dict) -> tuple:
    return (job["seed"], job["variant"], job["pattern"], job["budget"])


def run_one(job: dict) -> dict:
    """One pruning run in a worker process; every variant of a preset reuses that seed's dense model."""
    import torch

    torch.set_num_threads(job["threads"])
    from pruneformer.runs.pipeline import run
    from pruneformer.runs.recipe import build_recipe

    args = argparse.Namespace(**job["args"])
    preset, seed, variant, pattern = job["preset"], job["seed"], job["variant"], job["pattern"]
    method, overrides = VARIANTS[variant]
    dense_dir = Path(job["dense_root"]) / f"seed{seed}" / "dense"
    tag = f"{variant}-{pattern.replace(':', 'of')}-b{job['budget']:g}"
    out = dense_dir if method == "dense" else Path(job["root"]) / f"seed{seed}" / tag
    recipe = base_recipe({**preset, "budget": job["budget"]}, seed, out, args)
    overrides = json.loads(json.dumps(overrides))
    fraction = overrides.get("admm", {}).pop("epochs_fraction", None)
    recipe = deep_merge(recipe, overrides)
    if fraction is not None:
        recipe["admm"]["epochs"] = fraction * recipe["prune"]["epochs"]
    recipe["prune"].update(method=method, pattern="2:4" if method == "dense" else pattern)
    if method != "dense":
        recipe["dense"].update(epochs=0.0, checkpoint=str(dense_dir / "model"))
    resume = (out / "run_state.json").is_file()
    started = time.time()
    finished = out / "report.json"
    if method != "dense" and finished.is_file():  # finished, but the sweep stopped before recording it
        report = json.loads(finished.read_text())  # (its weights may already be discarded: no resume)
    else:
        report = run(build_recipe(recipe), resume=resume, progress=False, log=lambda line: None)
    if args.discard_models and method != "dense":  # keep the report, drop the weights (disk on a big sweep)
        for sub in ("checkpoints", "model"):
            shutil.rmtree(out / sub, ignore_errors=True)
    metric = report["primary_metric"]
    record = {"seed": seed, "variant": variant, "method": method, "pattern": "dense" if method == "dense" else pattern,
              "budget": job["budget"] if method != "dense" and method not in ONE_SHOT else 0.0,
              "dev": report["pruned"]["dev"][metric], "test": report["pruned"].get("test", {}).get(metric),
              "dense_dev": report["dense"]["dev"][metric], "dense_test": report["dense"].get("test", {}).get(metric),
              "metric": metric, "wall_s": round(time.time() - started, 1),
              "prune_wall_s": sum(p["wall_time_s"] for p in report["phases"] if p["name"] != "dense"),
              "pattern_exact": report["all_layers_satisfy_pattern"]}
    solved = [row for p in report["phases"] for row in p["method_history"] if "error" in row and "layer" in row]
    if solved:  # a calibrated one-shot phase: per-layer relative reconstruction errors
        record["reconstruction"] = {key: statistics.mean(r[key] for r in solved if key in r) for key in
                                    ("error", "sparsegpt_error", "magnitude_error") if any(key in r for r in solved)}
        record["reconstruction"]["layers"] = solved
        record["prune_s"] = sum(p["wall_time_s"] for p in report["phases"] if p["steps"] == 0 and p["name"] != "dense")
    admm = [p for p in report["phases"] if p["name"].endswith("-admm")]
    if admm:
        history = admm[0]["method_history"]
        evals = admm[0]["evals"]
        record["admm"] = {"updates": len(history) - 1, "primal_first": history[0]["primal_residual"],
                          "primal_last": history[-1]["primal_residual"],
                          "magnitude_agreement": history[-1].get("magnitude_agreement"),
                          "mask_changed_last": history[-1].get("mask_changed"),
                          "flipped_back_max": max(h.get("flipped_back", 0.0) for h in history),
                          "final_magnitude_agreement": history[-1].get("final_magnitude_agreement"),
                          "proj_dev_after_admm": evals[-1][metric] if evals else None,
                          "history": history}
    return record


def step_time_ratio(dense_model: Path, steps: int = 12, repeats: int = 2) -> dict:
    """Time dense, ADMM and SR-STE steps of the loop's own :func:`train_step` on identical batches.

    Each method trains its own copy of the model; the three take turns step by step (the order rotates), so
    a load that drifts over the measurement hits all three alike. Medians, warm-up steps skipped.
    """
    import copy

    import torch
    from transformers import DataCollatorWithPadding

    from pruneformer.core.targets import resolve_targets
    from pruneformer.data import tokenize_bundle
    from pruneformer.methods import ADMMPruner, SRSTEPruner
    from pruneformer.models.saved import load_pruned_model
    from pruneformer.runs.engine import prepare_data
    from pruneformer.runs.recipe import DataConfig
    from pruneformer.train.loop import StepContext, make_optimizer, make_scheduler, train_step

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer, _ = load_pruned_model(dense_model)
    bundle = tokenize_bundle(prepare_data(DataConfig(max_train=32 * steps, max_eval=32), 0), tokenizer, 64)
    collate = DataCollatorWithPadding(tokenizer)
    rows = bundle.train.to_list()
    batches = [{k: v.to(device) for k, v in collate(rows[i: i + 32]).items()} for i in range(0, 32 * steps, 32)]
    methods = {"dense": None, "admm": ADMMPruner("2:4", interval=30), "srste": SRSTEPruner("2:4")}
    contexts = {}
    for name, method in methods.items():
        replica = copy.deepcopy(model).to(device).train()
        if method is not None:
            method.attach(replica, resolve_targets(replica))
        optimizer = make_optimizer(replica, 1e-5, 0.01)
        contexts[name] = StepContext(replica, optimizer, make_scheduler(optimizer, 0, 10 * steps * repeats, 0.0), method)
    times: dict[str, list[float]] = {k: [] for k in methods}
    order = list(methods)
    step = 0
    for _ in range(repeats):
        for batch in batches:
            order = order[1:] + order[:1]  # rotate who goes first
            for name in order:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                train_step(contexts[name], batch, step)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if step >= 2:  # skip warm-up steps
                    times[name].append(time.perf_counter() - t0)
            step += 1
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"dense_step_s": med["dense"], "admm_step_s": med["admm"], "srste_step_s": med["srste"],
            "admm_over_dense": med["admm"] / med["dense"], "srste_over_dense": med["srste"] / med["dense"],
            "steps_timed": len(times["dense"]), "batch": "32 x <=64 tokens", "device": str(device),
            "threads": torch.get_num_threads(),
            "note": f"ADMM: Z/U update every 30 steps ({len(times['admm']) // 30} in the timed steps)"}


def mean_std(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f} ± {100 * sd:.2f}"


def paired_difference(records: list[dict], variant: str, pattern: str, budget: float, split: str = "test") -> str:
    """Mean ± std over seeds of (variant - magnitude + retrain) on the same seed, in points."""
    by_seed = {(r["variant"], r["seed"]): r[split] for r in records if r["pattern"] == pattern and r["budget"] == budget}
    diffs = [by_seed[(variant, s)] - by_seed[("magnitude-retrain", s)] for (v, s) in by_seed
             if v == variant and ("magnitude-retrain", s) in by_seed]
    if not diffs:
        return "-"
    sd = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
    return f"{100 * statistics.mean(diffs):+.2f} ± {100 * sd:.2f} (n={len(diffs)})"


def summarise(records: list[dict], name: str, preset: dict, timing: dict | None, hardware: str) -> tuple[str, dict]:
    budget = preset["budget"]
    lines = [f"Preset `{name}`: train {preset['max_train'] or 'all (8,568)'}, dev/test {preset['max_eval'] or 'all'}, "
             f"dense {preset['dense_epochs']:g} epoch(s) at lr {preset['lr']:g}, pruning budget {budget:g} epoch(s) "
             f"for every retraining row unless named, ADMM Z/U interval {preset['interval']} steps; seeds "
             f"{sorted({r['seed'] for r in records})}; {hardware}.", "",
             "Accuracy (%) on the test split, mean ± std over seeds, dev in brackets; `vs ASP` is the mean ± std of "
             "the per-seed test difference to magnitude + retrain (points). ADMM columns: primal residual "
             "||W-Z||/||W|| at the last Z/U update, dev accuracy of Proj(W) right after the ADMM phase, share of "
             "N:M groups whose mask equals one-shot magnitude's.", "",
             "| pattern | variant | budget | test | dev | vs ASP (test) | ADMM residual | Proj(W) dev | = magnitude | n |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    variants = list(VARIANTS)
    cells: dict[tuple, list[dict]] = {}
    for r in records:
        cells.setdefault((r["pattern"], r["variant"], r["budget"]), []).append(r)
    for pattern in ["dense"] + PATTERNS:
        keys = sorted((k for k in cells if k[0] == pattern), key=lambda k: (k[2] != budget, k[2], variants.index(k[1])))
        for key in keys:
            rows = cells[key]
            admm = [r["admm"] for r in rows if r.get("admm")]
            residual = f"{statistics.mean(a['primal_last'] for a in admm):.3g}" if admm else ""
            proj = mean_std([a["proj_dev_after_admm"] for a in admm]) if admm else ""
            agree = mean_std([a["magnitude_agreement"] if a.get("final_magnitude_agreement") is None
                              else a["final_magnitude_agreement"] for a in admm]) if admm else ""  # the hard prune's
            vs = paired_difference(records, key[1], pattern, key[2]) if key[1] != "magnitude-retrain" and pattern != "dense" else ""
            lines.append(f"| {pattern} | {key[1]} | {key[2]:g} | {mean_std([r['test'] for r in rows])} | "
                         f"({mean_std([r['dev'] for r in rows])}) | {vs} | {residual} | {proj} | {agree} | {len(rows)} |")
    solved = [r for r in records if r.get("reconstruction")]
    if solved:
        lines += ["", "Calibrated one-shot rows: mean over the 36 Linears of the relative reconstruction error "
                      "||X(W - W')||^2 / ||XW||^2 on the calibration inputs (512 training sentences, padding "
                      "excluded), of the method and, on the same inputs, of SparseGPT and magnitude; mean over seeds.",
                  "", "| pattern | variant | layer error | SparseGPT's | magnitude's | prune time (s) | n |",
                  "|---|---|---|---|---|---|---|"]
        groups: dict[tuple, list[dict]] = {}
        for r in solved:
            groups.setdefault((r["pattern"], r["variant"]), []).append(r)
        for (pattern, variant), rows in sorted(groups.items()):
            mean = {k: statistics.mean(r["reconstruction"].get(k, float("nan")) for r in rows)
                    for k in ("error", "sparsegpt_error", "magnitude_error")}
            lines.append(f"| {pattern} | {variant} | {mean['error']:.4f} | {mean['sparsegpt_error']:.4f} | "
                         f"{mean['magnitude_error']:.4f} | {statistics.mean(r['prune_s'] for r in rows):.0f} | {len(rows)} |")
    if timing:
        lines += ["", f"Training-step time, the loop's own `train_step`, same batches, interleaved, {timing['device']}, "
                      f"{timing['threads']} thread(s): ADMM / dense = {timing['admm_over_dense']:.3f}, SR-STE / dense = "
                      f"{timing['srste_over_dense']:.3f} (dense step {1000 * timing['dense_step_s']:.1f} ms, "
                      f"{timing['batch']}, median of {timing['steps_timed']} steps; {timing['note']})."]
    wall = sum(r.get("wall_s", 0) for r in records)
    lines += ["", f"Sum of the runs' wall times: {wall / 3600:.2f} h."]
    return "\n".join(lines) + "\n", {"preset": name, "settings": preset, "hardware": hardware, "records": records,
                                     "timing": timing}


def plot_budget_curve(records: list[dict], path: Path, pattern: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for variant in BUDGET_CURVE["variants"]:
        points: dict[float, list[float]] = {}
        for r in records:
            if r["variant"] == variant and r["pattern"] == pattern:
                points.setdefault(r["budget"], []).append(100 * r["test"])
        if points:
            xs = sorted(points)
            means = [statistics.mean(points[x]) for x in xs]
            errs = [statistics.stdev(points[x]) if len(points[x]) > 1 else 0 for x in xs]
            ax.errorbar(xs, means, yerr=errs, marker="o", capsize=3, label=variant)
    dense = [100 * r["test"] for r in records if r["variant"] == "dense"]
    if dense:
        ax.axhline(statistics.mean(dense), color="grey", ls="--", label="dense")
    ax.set(xscale="log", xlabel="pruning budget (epochs)", ylabel="test accuracy (%)", title=f"{pattern}: accuracy by budget")
    ax.set_xticks(BUDGET_CURVE["budgets"], [f"{b:g}" for b in BUDGET_CURVE["budgets"]])
    ax.minorticks_off()
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def hardware_line(jobs: int, threads: int) -> str:
    import torch

    from pruneformer.runs.report import hardware_summary

    gpu = f"GPU {torch.cuda.get_device_name(0)}, " if torch.cuda.is_available() else ""
    return f"{gpu}{hardware_summary()}; {jobs} run(s) side by side, {threads} thread(s) each"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="standard")
    parser.add_argument("--seeds", type=int, nargs="*", help="override the preset's seeds")
    parser.add_argument("--patterns", nargs="*", default=PATTERNS)
    parser.add_argument("--variants", nargs="*", default=DEFAULT_VARIANTS, choices=sorted(VARIANTS))
    parser.add_argument("--budget-curve", action="store_true", help="also run the 1:4 budget curve (budgets 1, 2, 4)")
    parser.add_argument("--lr", type=float, default=None, help="pruning-phase lr (default: the preset's)")
    parser.add_argument("--budget", type=float, help="override the preset's pruning budget (epochs)")
    parser.add_argument("--interval", type=int, help="override the preset's ADMM Z/U interval (steps)")
    parser.add_argument("--jobs", type=int, default=1, help="runs side by side, one process each")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--tag", default="", help="suffix for the results files (variants of one preset)")
    parser.add_argument("--work-dir", default=str(HERE.parent / "runs" / "bench"))
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument("--report-only", action="store_true", help="rewrite the table and plot from the results "
                        "file, running nothing (e.g. after a sweep ran on another machine)")
    parser.add_argument("--checkpoint-every", type=int, default=100, help="steps between resumable checkpoints")
    parser.add_argument("--discard-models", action="store_true", help="delete each pruned run's weights once its "
                        "report is written (a large sweep on a small disk)")
    parser.add_argument("--results", default=str(HERE / "results"))
    args = parser.parse_args()
    preset = dict(PRESETS[args.preset])
    for key in ("seeds", "budget", "interval"):
        if getattr(args, key):
            preset[key] = getattr(args, key)
    name = args.preset + (f"-{args.tag}" if args.tag else "")
    root = Path(args.work_dir) / name
    dense_root = Path(args.work_dir) / args.preset
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    log_path = results / f"nm_accuracy-{name}.jsonl"
    records = [json.loads(l) for l in log_path.read_text().splitlines() if l.strip()] if log_path.is_file() else []
    done = {run_key(r) for r in records}

    common = {"preset": preset, "root": str(root), "dense_root": str(dense_root), "threads": args.threads,
              "args": {"lr": args.lr, "checkpoint_every": args.checkpoint_every, "discard_models": args.discard_models}}
    dense_jobs = [{**common, "seed": s, "variant": "dense", "pattern": "dense", "budget": 0.0} for s in preset["seeds"]]
    jobs = [{**common, "seed": s, "variant": v, "pattern": p, "budget": 0.0 if VARIANTS[v][0] in ONE_SHOT else preset["budget"]}
            for v in args.variants if v != "dense" for s in preset["seeds"] for p in args.patterns]
    if args.budget_curve:
        c = BUDGET_CURVE
        jobs += [{**common, "seed": s, "variant": v, "pattern": c["pattern"], "budget": b}
                 for b in c["budgets"] for s in c["seeds"] for v in c["variants"] if s in preset["seeds"]]
    for job in jobs:  # the 1-epoch peer row is named by its own budget
        if job["variant"] == "magnitude-retrain-1ep":
            job["budget"] = 1.0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    def missing_dense(job: dict) -> bool:
        """A dense model recorded in the results but not on this disk (a sweep moved to another machine)."""
        return job["variant"] == "dense" and not (dense_root / f"seed{job['seed']}" / "dense" / "model").is_dir()

    sweep_hardware = hardware_line(args.jobs, args.threads)

    def execute(batch: list[dict]) -> None:
        todo, seen = [], set()
        for job in batch:
            if (run_key(job) not in done or missing_dense(job)) and run_key(job) not in seen:
                todo.append(job)
                seen.add(run_key(job))
        if not todo:
            return
        import multiprocessing

        with ProcessPoolExecutor(max_workers=max(1, args.jobs), mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(run_one, job): job for job in todo}
            for future in as_completed(futures):
                job = futures[future]
                try:
                    record = future.result()
                except Exception as exc:  # one failed run must not lose the others' results
                    print(f"FAILED seed {job['seed']} {job['variant']} {job['pattern']}: {exc!r}", flush=True)
                    continue
                if run_key(record) in done:  # a dense model retrained on this disk: keep the first record
                    continue
                record["hardware"] = sweep_hardware  # an interrupted sweep's report can still name its machine
                records.append(record)
                done.add(run_key(record))
                with log_path.open("a") as handle:
                    handle.write(json.dumps(record) + "\n")
                print(f"[seed {record['seed']}] {record['variant']} {record['pattern']} b{record['budget']:g}: "
                      f"dev {record['dev']:.4f} test {record['test']:.4f} ({record['wall_s']:.0f}s)", flush=True)

    previous = results / f"nm_accuracy-{name}.json"
    previous = json.loads(previous.read_text()) if previous.is_file() else {}
    if args.report_only:  # the sweep's own hardware line and timing, not this machine's
        recorded = next((r["hardware"] for r in reversed(records) if "hardware" in r), None)
        timing = previous.get("timing")
        hardware = previous.get("hardware") or recorded or f"{sweep_hardware} (this machine at report time: the runs recorded none)"
    else:
        execute(dense_jobs)  # every other run starts from these
        execute(jobs)
        timing = previous.get("timing")
        if not args.no_timing:
            timing = step_time_ratio(dense_root / f"seed{preset['seeds'][0]}" / "dense" / "model")
        hardware = sweep_hardware
    markdown, payload = summarise(records, name, preset, timing, hardware)
    (results / f"nm_accuracy-{name}.md").write_text(markdown)
    (results / f"nm_accuracy-{name}.json").write_text(json.dumps(payload, indent=2))
    if any(r["budget"] != preset["budget"] and r["pattern"] == BUDGET_CURVE["pattern"]
           and r["variant"] in BUDGET_CURVE["variants"] for r in records):  # a curve was run (not one-shot rows)
        plot_budget_curve(records, results / f"nm_budget-{name}.png", BUDGET_CURVE["pattern"])
    print(markdown)


if __name__ == "__main__":
    sys.exit(main())
