"""Why the fine-tuning ADMM collapses to magnitude, and whether the new pull fixes it: a one-Linear probe.

A dense Linear W0 sits at the task's optimum (targets are W0's own outputs plus noise, as a fine-tuned model
sits near its task's minimum); its inputs have feature norms that differ (as a transformer's hidden states
do), so the mask that keeps the task's loss lowest is not magnitude's. ADMM runs for one phase of the
standard preset's schedule (270 AdamW steps of batch 32, the phase's slice of a warmup + linear-decay lr,
Z/U every 30 steps) at lr 5e-5 (the preset's) and 1e-3, then hard-prunes. Per variant it prints the share of
2:4 groups the hard prune keeps as one-shot magnitude would, the share it keeps as the reconstruction
optimum (ALPS on the inputs' Gram matrix) would, the largest share of groups that flipped back at one update
(a dual oscillation), the primal residual at the hard prune, and the task loss of the hard-pruned weights
relative to one-shot magnitude's: the loss pruning adds over the dense weights' (lower is better;
ALPS's one-shot beside it).

    python benchmarks/admm_probe.py            # writes benchmarks/results/admm_probe.{json,md}
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
from torch import nn

from pruneformer.core.patterns import parse_pattern
from pruneformer.core.targets import Target
from pruneformer.methods import ADMMPruner, ALPSPruner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from layer_fixtures import run_phase  # noqa: E402  (the tests' one-Linear ADMM phase)

HERE = Path(__file__).resolve().parent
VARIANTS = {  # name -> ADMMPruner settings (rho_factor: the continuation reaching rho_max at 60% of 9 updates)
    "today (fixed pull, magnitude Z)": dict(pull="fixed", score="magnitude", rho=0.02, rho_max=0.3),
    "today, gentle start (rho 5e-4)": dict(pull="fixed", score="magnitude", rho=5e-4, rho_max=0.3),
    "lr pull, magnitude Z": dict(pull="lr", score="magnitude", rho=30.0, rho_max=3000.0),
    "lr pull, fisher Z": dict(pull="lr", score="fisher", rho=30.0, rho_max=3000.0),
}


def problem(seed: int, inputs: int = 256, outputs: int = 64, pool: int = 4096):
    g = torch.Generator().manual_seed(seed)
    scales = torch.exp(0.7 * torch.randn(inputs, generator=g))  # per-feature norms, a few large ones
    x = torch.randn(pool, inputs, generator=g) * scales
    w0 = 0.04 * torch.randn(outputs, inputs, generator=g)
    y = x @ w0.T + 0.5 * torch.randn(pool, outputs, generator=g)
    return x, y, w0


def task_loss(weight: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(nn.functional.mse_loss(x @ weight.T, y))


def added_loss(weight: torch.Tensor, x, y, w0) -> float:
    """The task loss pruning adds over the dense weights' (the noise floor left out)."""
    return task_loss(weight, x, y) - task_loss(w0, x, y)


def run_admm(settings: dict, x, y, w0, lr: float, seed: int, steps: int = 270, interval: int = 30):
    factor = (settings["rho_max"] / settings["rho"]) ** (1 / round(0.6 * (steps // interval)))
    method = ADMMPruner("2:4", interval=interval, rho_factor=factor, **settings)
    torch.manual_seed(seed)
    mask, weight = run_phase(method, x, y, w0, lr, steps, order_seed=seed)  # the tests' loop (tests/layer_fixtures.py)
    return method, mask, weight


def alps_mask(x, w0) -> tuple[torch.Tensor, torch.Tensor]:
    layer = nn.Linear(w0.shape[1], w0.shape[0], bias=False)
    with torch.no_grad():
        layer.weight.copy_(w0)
    target = Target("probe", layer, "ffn_in", 0)
    method = ALPSPruner("2:4", compare=False)
    method.attach(layer, [target])
    method.observe(target, x)
    method.prune_target(target)
    return method.finalize()["probe"], layer.weight.detach().clone()


def agreement(pattern, a: torch.Tensor, b: torch.Tensor) -> float:
    same, total = pattern.groups_equal(a, b)
    return same / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--lrs", type=float, nargs="*", default=[5e-5, 1e-3])
    args = parser.parse_args()
    pattern = parse_pattern("2:4")
    rows = []
    for seed in args.seeds:
        x, y, w0 = problem(seed)
        magnitude = pattern.mask(w0)
        optimum, alps_weight = alps_mask(x, w0)
        base = added_loss(w0 * magnitude, x, y, w0)
        for lr in args.lrs:
            for name, settings in VARIANTS.items():
                method, mask, weight = run_admm(settings, x, y, w0, lr, seed)
                rows.append({"seed": seed, "lr": lr, "variant": name,
                             "magnitude_agreement": agreement(pattern, mask, magnitude),
                             "optimum_agreement": agreement(pattern, mask, optimum),
                             "max_flipped_back": max(h.get("flipped_back", 0.0) for h in method.history),
                             "primal_at_prune": method.history[-1]["primal_residual"],
                             "loss_vs_magnitude": added_loss(weight, x, y, w0) / base,
                             "alps_loss_vs_magnitude": added_loss(alps_weight, x, y, w0) / base,
                             "alps_vs_magnitude_agreement": agreement(pattern, optimum, magnitude)})
                print(json.dumps(rows[-1]))
    keys = ["magnitude_agreement", "optimum_agreement", "max_flipped_back", "primal_at_prune", "loss_vs_magnitude"]
    lines = ["# ADMM probe: one Linear at its task optimum, 2:4, 270 AdamW steps (`benchmarks/admm_probe.py`)", "",
             f"Means over seeds {args.seeds}. One-shot ALPS keeps {statistics.mean(r['alps_vs_magnitude_agreement'] for r in rows):.3f} "
             f"of groups as magnitude does, adding {statistics.mean(r['alps_loss_vs_magnitude'] for r in rows):.3f} x "
             "the loss magnitude's one-shot adds.", "",
             "| lr | variant | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for lr in args.lrs:
        for name in VARIANTS:
            picked = [r for r in rows if r["lr"] == lr and r["variant"] == name]
            lines.append(f"| {lr:g} | {name} | " + " | ".join(f"{statistics.mean(r[k] for r in picked):.3f}" for k in keys) + " |")
    out = HERE / "results" / "admm_probe"
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
