"""The latency half of ``benchmarks/structured.py --latency``: the dense model and the sweep's seed-0 models,
interleaved round by round in one process, and the block-sparse stage (32x32 blocks zeroed in a shrunk model,
dense kernels against torch BSR). Kept apart so the accuracy sweep's module stays one job."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from pruneformer.deploy.latency import time_models
from pruneformer.runs.report import hardware_summary


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


def latency(args, preset_name: str, preset: dict, records: list[dict], dense_model: Path,
            methods: list[str]) -> tuple[str, dict]:
    """Latency table of ``dense_model`` and each of ``methods``' seed-0 models in ``records`` (or the untrained L1
    shape where the sweep left no model), plus the block-sparse stage."""
    import copy

    from pruneformer.compress import kept_encoder_weights, shrink_model
    from pruneformer.core.structure import LayerPlan
    from pruneformer.core.targets import resolve_targets
    from pruneformer.methods import L1StructuredPruner
    from pruneformer.models.saved import load_pruned_model

    torch.set_num_threads(args.latency_threads)
    dense, _, _ = load_pruned_model(dense_model)
    dense.eval()
    vocab = dense.config.vocab_size
    base = kept_encoder_weights(dense)
    models: dict[str, nn.Module] = {"dense": dense,
                                    "dense as shrunk-bert (nothing removed)": shrink_model(dense, [LayerPlan()] * 6).eval()}
    kept: dict[str, float] = {}
    for fraction in preset["fractions"]:
        for method in methods:
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

    lines = [f"CPU latency, {hardware_summary()} (torch.set_num_threads({args.latency_threads})); seed-0 models of preset `{preset_name}`; "
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
