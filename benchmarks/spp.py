"""SPP benchmark: one search serves every ratio, against one L1-magnitude structured run per ratio.

Per seed: a dense fine-tune, then
* SPP: one search, then for each ratio: cut the earliest-entering paired units (QK, VO, FFN; global over
  layers per group) physically, short fine-tune, score;
* L1: for each ratio: cut the paired units with the smallest L1 norms of their weights (same groups,
  same granularity, same counts), the same short fine-tune, score.
Both sides are timed in the same process: SPP = search + its cuts, L1 = its cuts (slicing, fine-tune and
scoring are identical work on both sides). Each finished item goes to ``results/spp-<preset>.jsonl``, so
an interrupted run resumes; the table goes to ``results/spp-<preset>.{md,json}`` and a plot beside it.
Ratios run in two rounds (0.2/0.4/0.6 for every seed first, then 0.3/0.5), so a run cut short still has
every seed at fewer ratios.

    python benchmarks/spp.py --preset quick     # 2,000 training sentences, length 64, 3 seeds
    python benchmarks/spp.py --preset smoke     # minutes, checks the script end to end
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from pruneformer.compress.paired import l1_scores
from pruneformer.methods.spp.cut import keep_top
from pruneformer.methods.spp.plots import plot_accuracy_vs_ratio
from pruneformer.methods.spp.record import PathRecord
from pruneformer.models.saved import load_pruned_model
from pruneformer.runs.recipe import build_recipe
from pruneformer.runs.report import hardware_summary
from pruneformer.runs.solution_path import cut, load_task, search

HERE = Path(__file__).resolve().parent
PRESETS = {
    "smoke": dict(max_train=256, max_eval=200, dense_epochs=1.0, search_epochs=0.5, finetune=0.5,
                  rounds=[[0.2, 0.6]], seeds=[0]),
    "quick": dict(max_train=2000, max_eval=500, dense_epochs=1.0, search_epochs=0.5, finetune=0.5,
                  rounds=[[0.2, 0.4, 0.6], [0.3, 0.5]], seeds=[0, 1, 2]),
}


def recipe_for(preset: dict, seed: int, out: Path, args) -> dict:
    return {
        "model": "embedded", "seed": seed, "output_dir": str(out),
        "data": {"source": "embedded", "max_length": 64, "max_train": preset["max_train"], "max_eval": preset["max_eval"]},
        "dense": {"epochs": preset["dense_epochs"], "lr": 1e-4},
        "prune": {"lr": 1e-4},
        "spp": {"epochs": preset["search_epochs"], "alpha": args.alpha, "nu": args.nu, "lam": args.lam,
                "granularity": args.granularity, "finetune_epochs": preset["finetune"]},
        "train": {"batch_size": 32},
    }


def load_done(path: Path) -> dict[tuple, dict]:
    done = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            done[(row["seed"], row["method"], row["ratio"])] = row
    return done


def summarise(rows: list[dict], preset_name: str, preset: dict, out: Path) -> None:
    by: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["method"] in ("spp", "l1"):
            by.setdefault((r["method"], r["ratio"]), []).append(r)
    table, series = [], {"SPP (one search)": [], "L1 (one run per ratio)": []}
    ratios = sorted({k[1] for k in by})
    for ratio in ratios:
        line = {"ratio": ratio}
        for method, label in (("spp", "SPP (one search)"), ("l1", "L1 (one run per ratio)")):
            got = by.get((method, ratio), [])
            tests = [g["test"] for g in got]
            line[method] = {"mean": statistics.mean(tests) if tests else None,
                            "std": statistics.stdev(tests) if len(tests) > 1 else 0.0, "n": len(tests),
                            "seeds": [g["seed"] for g in got], "params": got[0]["parameters"] if got else None,
                            "dense_params": got[0]["dense_parameters"] if got else None}
            if tests:
                series[label].append({"ratio": ratio, "mean": line[method]["mean"], "std": line[method]["std"]})
        table.append(line)
    seeds = sorted({r["seed"] for r in rows})
    both = [s for s in seeds if all((s, m, x) in {(r["seed"], r["method"], r["ratio"]) for r in rows}
                                    for m in ("spp", "l1") for x in ratios)]
    searches = {r["seed"]: r for r in rows if r["method"] == "search"}
    spp_time = sum(searches[s]["wall_s"] for s in both if s in searches) + sum(
        r["wall_s"] for r in rows if r["method"] == "spp" and r["seed"] in both)
    l1_time = sum(r["wall_s"] for r in rows if r["method"] == "l1" and r["seed"] in both)
    dense = [r["dense_test"] for r in searches.values()]
    result = {"preset": preset_name, "settings": preset, "hardware": hardware_summary(), "seeds": seeds, "table": table,
              "timing_seeds": both, "spp_total_s": spp_time, "l1_total_s": l1_time,
              "time_ratio_spp_over_l1": spp_time / l1_time if l1_time else None,
              "search_s": {s: searches[s]["wall_s"] for s in searches},
              "dense_test_mean": statistics.mean(dense) if dense else None,
              "entered": {s: searches[s]["entered"] for s in searches}}
    (out.with_suffix(".json")).write_text(json.dumps(result, indent=2))
    pct = lambda v: "-" if v is None else f"{100 * v:.2f}"  # noqa: E731
    lines = [f"Preset `{preset_name}` (train {preset['max_train']}, dev/test {preset['max_eval']}, length 64, "
             f"dense {preset['dense_epochs']} epoch, SPP search {preset['search_epochs']} epoch, "
             f"fine-tune {preset['finetune']} epoch after every cut); seeds {seeds}; {hardware_summary()}.", "",
             f"Dense test accuracy: {pct(result['dense_test_mean'])} (mean over seeds).", "",
             "| ratio removed | params kept | SPP test acc. | L1 test acc. | SPP - L1 | n |", "|---|---|---|---|---|---|"]
    for line in table:
        s, l = line["spp"], line["l1"]
        diff = "-" if s["mean"] is None or l["mean"] is None else f"{100 * (s['mean'] - l['mean']):+.2f}"
        params = f"{s['params']:,} / {s['dense_params']:,}" if s["params"] else "-"
        lines.append(f"| {line['ratio']:.1f} | {params} | {pct(s['mean'])} ± {pct(s['std'])} | "
                     f"{pct(l['mean'])} ± {pct(l['std'])} | {diff} | {s['n']}/{l['n']} |")
    if l1_time:
        lines += ["", f"Wall time over seeds {both} and the {len(ratios)} ratios: SPP (one search + cuts) "
                  f"{spp_time:.0f} s, L1 (one run per ratio) {l1_time:.0f} s; ratio SPP / L1 = "
                  f"{spp_time / l1_time:.3f}. Search alone: "
                  + ", ".join(f"seed {s} {searches[s]['wall_s']:.0f} s" for s in searches) + "."]
    (out.with_suffix(".md")).write_text("\n".join(lines) + "\n")
    if table:
        plot_accuracy_vs_ratio({k: v for k, v in series.items() if v}, "accuracy", out.with_suffix(".png"), split="test")
    print("\n".join(lines), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    parser.add_argument("--alpha", type=float, default=25.0)
    parser.add_argument("--nu", type=float, default=1000.0)
    parser.add_argument("--lam", type=float, default=1.0)
    parser.add_argument("--granularity", default="shared", choices=["shared", "head"])
    parser.add_argument("--tag", default="")
    parser.add_argument("--work-dir", default=str(HERE.parent / "runs" / "bench-spp"))
    parser.add_argument("--seeds", type=int, nargs="*", help="only these seeds of the preset (parallel processes share the .jsonl)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of this process")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    preset = dict(PRESETS[args.preset])
    if args.seeds:
        preset["seeds"] = [s for s in preset["seeds"] if s in args.seeds]
    name = args.preset + (f"-{args.tag}" if args.tag else "")
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    jsonl = results / f"spp-{name}.jsonl"
    done = load_done(jsonl)
    root = Path(args.work_dir) / name

    def record(row: dict) -> None:
        done[(row["seed"], row["method"], row["ratio"])] = row
        with jsonl.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)

    for ratios in preset["rounds"]:
        for seed in preset["seeds"]:
            run_dir = root / f"seed{seed}"
            if (seed, "search", None) not in done:
                recipe = build_recipe(recipe_for(preset, seed, run_dir, args))
                summary = search(recipe, progress=False, log=lambda line: print("   ", line, flush=True))
                record({"seed": seed, "method": "search", "ratio": None, "wall_s": summary["wall_time_s"]["search"],
                        "entered": summary["entered"], "units": summary["units"],
                        "dense_test": summary["dense"]["test"]["accuracy"], "dense_dev": summary["dense"]["dev"]["accuracy"]})
            model, tokenizer, _ = load_pruned_model(run_dir / "model")
            recipe = build_recipe(recipe_for(preset, seed, run_dir, args))
            path = PathRecord.load(run_dir / "model")
            path.check_model(model)
            tokenized, collator = load_task(recipe, model, tokenizer)
            for ratio in ratios:
                for method in ("spp", "l1"):
                    if (seed, method, ratio) in done:
                        continue
                    t0 = time.perf_counter()
                    keep = path.keep(ratio) if method == "spp" else keep_top(l1_scores(model, path.granularity), ratio)
                    _, row = cut(model, keep, recipe, tokenized, collator, preset["finetune"])
                    record({"seed": seed, "method": method, "ratio": ratio, "wall_s": time.perf_counter() - t0,
                            "test": row["scores"]["test"]["accuracy"], "dev": row["scores"]["dev"]["accuracy"],
                            "parameters": row["parameters"], "dense_parameters": row["dense_parameters"],
                            "kept_units": row["kept_units"]})
            summarise(list((load_done(jsonl) | done).values()), name, PRESETS[args.preset], results / f"spp-{name}")


if __name__ == "__main__":
    main()
