"""Why MLPruning and the L1 baseline round kept widths to a multiple of 16: odd widths run slower.

Times ``nn.Linear`` forward passes on 4096 tokens (batch 32 x length 128) at MiniLM's shapes, each odd
width beside its nearest multiple of 16, and prints the cost per multiply-add side by side. Fastest of
``--repeats`` runs per shape; ``torch.set_num_threads(--threads)``.

    python benchmarks/gemm_widths.py            # ~30 s; writes results/gemm_widths.{md,json}
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from pruneformer.runs.report import hardware_summary

HERE = Path(__file__).resolve().parent
#: (in, odd out, aligned out): attention-output / FFN-out rows and FFN-in units as MLPruning's 0.5 models kept them
PAIRS = [(384, 235, 240), (384, 243, 240), (384, 252, 256), (224, 235, 240), (890, 235, 240),
         (384, 882, 880), (384, 890, 896), (384, 770, 768), (384, 127, 128)]


def per_mac_ps(in_features: int, out_features: int, tokens: int, repeats: int) -> float:
    x = torch.randn(tokens, in_features)
    layer = torch.nn.Linear(in_features, out_features)
    times = []
    with torch.inference_mode():
        for _ in range(3):
            layer(x)
        for _ in range(repeats):
            t0 = time.perf_counter()
            layer(x)
            times.append(time.perf_counter() - t0)
    return min(times) * 1e12 / (tokens * in_features * out_features)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=32 * 128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for fan_in, odd, aligned in PAIRS:
        a, b = per_mac_ps(fan_in, odd, args.tokens, args.repeats), per_mac_ps(fan_in, aligned, args.tokens, args.repeats)
        rows.append({"in": fan_in, "odd": odd, "aligned": aligned, "odd_ps_per_mac": a, "aligned_ps_per_mac": b})
    lines = [f"`nn.Linear` forward on {args.tokens} tokens, {hardware_summary()}, fastest of "
             f"{args.repeats}; picoseconds per multiply-add (lower is faster):", "",
             "| in -> out (odd) | ps/MAC | in -> out (multiple of 16) | ps/MAC | odd / aligned |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['in']} -> {r['odd']} | {r['odd_ps_per_mac']:.1f} | {r['in']} -> {r['aligned']} | "
                     f"{r['aligned_ps_per_mac']:.1f} | {r['odd_ps_per_mac'] / r['aligned_ps_per_mac']:.2f}x |")
    markdown = "\n".join(lines) + "\n"
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    (results / "gemm_widths.md").write_text(markdown)
    (results / "gemm_widths.json").write_text(json.dumps({"hardware": hardware_summary(), "threads": args.threads,
                                                          "tokens": args.tokens, "rows": rows}, indent=2))
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
