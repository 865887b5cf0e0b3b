"""One-shot pruning of decoder LLMs: magnitude, Wanda or SparseGPT, then perplexity on held-out text.

The API for your own code is :func:`oneshot` (prune a loaded model in place); ``pruneformer oneshot``
runs :func:`run_oneshot`: load -> calibration and held-out token blocks -> dense perplexity -> prune
(layer by layer for calibrated methods) -> verify the pattern -> pruned perplexity -> save -> report.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from ..core.patterns import Pattern, parse_pattern
from ..core.sparsity import layer_sparsity, overall_sparsity
from ..core.targets import Target, resolve_targets
from ..errors import PruneformerError, RecipeError
from ..methods import PruningMethod
from ..methods.registry import oneshot_method
from ..models.llm import batches_of, load_causal_lm, load_texts, perplexity, token_blocks
from ..models.saved import save_pruned_model
from ..train.calibration import prune_layerwise
from .engine import claim_output_dir, refuse_finished_run
from .recipe import OneShotRecipe, recipe_to_yaml
from .report import markdown_table, write_report
from .stages import RunOptions, Stage, run_stage


def build_oneshot_method(name: str, pattern: Pattern | str, dampening: float = 0.01) -> PruningMethod:
    """A one-shot method by its registered name (``magnitude``, ``wanda``, ``sparsegpt``, ``alps``)."""
    return oneshot_method(name, pattern, dampening)


def oneshot(model: nn.Module, method: PruningMethod, calibration: torch.Tensor | None = None,
            targets: list[Target] | None = None, batch_size: int = 8, progress: bool = False) -> dict[str, torch.Tensor]:
    """Prune ``model`` in place with ``method``; returns the masks by layer name.

    ``calibration`` is ``[n, seq_len]`` token ids (see :func:`pruneformer.models.llm.token_blocks`); calibrated
    methods (Wanda, SparseGPT) need it, magnitude does not.
    """
    method.attach(model, targets if targets is not None else resolve_targets(model))
    if not method.calibrates:
        return method.finalize()
    if calibration is None or len(calibration) == 0:
        raise RecipeError(f"{method.name} needs calibration text.", "pass calibration token blocks")
    return prune_layerwise(model, method, batches_of(calibration, batch_size), progress=progress)


def run_oneshot(recipe: OneShotRecipe, options: RunOptions | None = None, **settings: Any) -> dict[str, Any]:
    """Execute a one-shot recipe; returns the report (also written as report.json / report.md).

    The dense perplexity and the pruned model are stages of ``run_state.json``: with ``resume=True`` an
    interrupted run keeps what finished and redoes the interrupted stage (pruning is deterministic, so the
    result equals an uninterrupted run's). ``options`` or their fields as keywords:
    :class:`~pruneformer.runs.stages.RunOptions` (one-shot runs have no training steps, so no callbacks).
    """
    options = RunOptions.of(options, **settings)
    log, progress = options.log, options.progress
    out = Path(recipe.output_dir)
    if (out / "report.json").is_file():
        raise PruneformerError(f"Output directory '{out}' already holds a one-shot run.",
                               "choose another --output-dir or delete that one")
    torch.manual_seed(recipe.seed)
    pattern = parse_pattern(recipe.pattern)
    method = build_oneshot_method(recipe.method, pattern, recipe.dampening)
    t0 = time.perf_counter()
    refuse_finished_run(out, options.resume)  # before the (long) load
    model, tokenizer = load_causal_lm(recipe.model, trust_pickle=options.trust_pickle)
    targets = resolve_targets(model, recipe.include, recipe.exclude)
    for target in targets:  # fail before any work if the pattern cannot fit a layer
        pattern.check_shape(target.shape, target.name)
    calibration_texts, heldout_texts = load_texts(recipe.data, recipe.eval_data, recipe.seed)
    calibration = token_blocks(calibration_texts, tokenizer, recipe.seq_len, recipe.calib_samples)
    heldout = token_blocks(heldout_texts, tokenizer, recipe.seq_len, recipe.eval_blocks)
    wall = {"load": time.perf_counter() - t0}
    log(f"{model.config.model_type} model, {len(targets)} target layers, {method.name} {pattern.spec}; "
        f"calibration {len(calibration)} x {recipe.seq_len} tokens, held-out {len(heldout)} x {recipe.seq_len}")

    state = claim_output_dir(out, options.resume, recipe_to_yaml(recipe))
    t1 = time.perf_counter()
    dense = run_stage(state, Stage("dense", lambda: perplexity(model, heldout, recipe.batch_size),
                                   lambda ppl: {"perplexity": ppl}, lambda done: done["perplexity"],
                                   reuse=lambda done: bool(done.get("perplexity"))))
    wall["eval_dense"] = time.perf_counter() - t1
    log(f"dense perplexity {dense['perplexity']:.3f}")
    t1 = time.perf_counter()
    snapshot = out / "checkpoints" / "pruned.safetensors"

    def prune() -> list[dict[str, Any]]:
        oneshot(model, method, calibration, targets, recipe.batch_size, progress)
        return [row for row in method.history if "layer" in row]  # ALPS: per-layer solver record

    def save(diagnostics: list[dict[str, Any]]) -> dict[str, Any]:
        save_model(model, str(snapshot))
        return {"layer_diagnostics": diagnostics}

    def load(done: dict[str, Any]) -> list[dict[str, Any]]:
        load_model(model, str(snapshot))
        return done.get("layer_diagnostics", [])

    diagnostics = run_stage(state, Stage("prune", prune, save, load))
    wall["prune"] = time.perf_counter() - t1
    layers = layer_sparsity(targets, pattern)
    if not all(r["satisfies_pattern"] for r in layers):
        bad = next(r["layer"] for r in layers if not r["satisfies_pattern"])
        raise PruneformerError(f"Internal error: layer {bad} does not satisfy {pattern.spec} after {method.name}.",
                               "please report this with the command line of the run")
    t1 = time.perf_counter()
    pruned = perplexity(model, heldout, recipe.batch_size)
    wall["eval_pruned"] = time.perf_counter() - t1
    log(f"{method.name} {pattern.spec} perplexity {pruned['perplexity']:.3f} (dense {dense['perplexity']:.3f})")

    info = {"method": method.name, "pattern": pattern.spec, "targets": [t.name for t in targets],
            "calibration": {"data": recipe.data, "blocks": len(calibration), "seq_len": recipe.seq_len}}
    model_dir = save_pruned_model(model, tokenizer, out / "model", info) if recipe.save else None
    wall["total"] = time.perf_counter() - t0
    report = {
        "model": recipe.model, "model_type": model.config.model_type, "method": method.name,
        "pattern": pattern.spec, "dense": dense, "pruned": pruned, "overall_sparsity": overall_sparsity(layers),
        "all_layers_satisfy_pattern": True, "calibration_blocks": len(calibration), "heldout_blocks": len(heldout),
        "seq_len": recipe.seq_len, "layers": layers, "wall_time_s": wall,
        "layer_diagnostics": diagnostics,
        "model_dir": str(model_dir) if model_dir else None, "recipe": recipe.model_dump(mode="json"),
    }
    write_report(report, out, render=render_oneshot_markdown)
    return report


def render_oneshot_markdown(report: dict[str, Any]) -> str:
    """The one-shot report as Markdown: perplexities, then per-layer sparsity."""
    lines = [f"# pruneformer one-shot report: {report['method']} {report['pattern']}", "",
             f"- model: `{report['model']}` ({report['model_type']})",
             f"- calibration: {report['calibration_blocks']} x {report['seq_len']} tokens; "
             f"held-out: {report['heldout_blocks']} x {report['seq_len']} tokens "
             f"({report['pruned']['tokens']} predicted)",
             f"- overall sparsity of targeted layers: {report['overall_sparsity']:.4f}; "
             f"every targeted layer satisfies {report['pattern']}: {report['all_layers_satisfy_pattern']}", "",
             "## Perplexity on held-out text", "",
             markdown_table([{"model": "dense", "perplexity": report["dense"]["perplexity"]},
                             {"model": f"{report['method']} {report['pattern']}",
                              "perplexity": report["pruned"]["perplexity"]}], ["model", "perplexity"]),
             "## Layers", "", markdown_table(report["layers"], ["layer", "role", "shape", "sparsity",
                                                                 "satisfies_pattern"])]
    return "\n".join(lines)
