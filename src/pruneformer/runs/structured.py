"""Structured pruning runs that end in a physically smaller model: MLPruning and the L1 baseline.

Called by :func:`pruneformer.runs.pipeline.run` after the dense fine-tune, for the methods whose registry entry
``shrinks`` (``methods/registry.py``); what differs between them is the method class's ``shrink_schedule``, not
a test of its name here:

* ``mlpruning`` (arXiv 2105.14636, two steps): head + row pruning with learnable Top-k thresholds and
  distillation from the dense model (logits, hidden states, attention probabilities) -> physical shrink
  (kept rows rounded up to a block multiple) -> optionally block pruning of the shrunk model, with the
  step-2 model as teacher. ``mlpruning.block_keep`` < 1 turns the block step on; the head + row step then
  aims at ``target / block_keep`` so that the two together keep ``target`` of the encoder weights.
* ``l1-structured``: one-shot L1-magnitude heads and FFN units at the same fraction, shrink, then retrain
  the shrunk model for the same budget with the same distillation (no attention term: the student has
  fewer heads than its teacher). Retraining the shrunk model is masked retraining with the mask fixed,
  only cheaper.

The result is saved with :func:`io.save_shrunk_model`; plain transformers loads it.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..compress import kept_encoder_weights, kept_per_layer, shrink_model
from ..core.sparsity import layer_sparsity
from ..core.targets import resolve_targets
from ..errors import PruneformerError
from ..methods.shrinking import ShrinkingMethod
from ..models.saved import load_pruned_model, save_shrunk_model
from ..train.evaluation import evaluate_splits
from ..train.loop import PhaseResult
from .engine import Run, finish_report
from .retraining import QAT_KEY, fine_tune_int8, mlpruning_distiller
from .stages import Stage, run_stage


def _eager(model: nn.Module) -> nn.Module:
    """Attention probabilities need eager attention (SDPA returns none); shrunk models switch by themselves."""
    if hasattr(model, "set_attn_implementation") and model.config.model_type != "shrunk-bert":
        model.set_attn_implementation("eager")
    return model


def run_structured(run: Run, dense_scores: dict[str, dict[str, float]], shrinker: type[ShrinkingMethod],
                   warnings: list[str] | None = None) -> dict[str, Any]:
    """The pruning phases, shrink, evaluation, save and report of a structured run, on an open :class:`Run`
    whose dense reference is done. ``shrinker``: the method class (``MethodEntry.shrinks``); its
    ``shrink_schedule(recipe)`` says how the budget is spent, ``from_config`` builds step 1 and ``block_step``
    the block step.

    Under ``torchrun`` every rank trains (the method's scores and thresholds are all-reduced with the
    weights, so every rank finalizes the same masks and shrinks to the same shapes); only rank 0 writes, and
    the others wait for its files.
    """
    world, recipe, log = run.world, run.recipe, run.log

    def save(shrunk_model: nn.Module, directory: Path, info: dict[str, Any]) -> Path:
        if world.is_main:
            save_shrunk_model(shrunk_model, run.tokenizer, directory, info)
        world.barrier()
        return directory

    model, tokenized, collator, task = run.model, run.tokenized, run.collator, run.task
    out, state, phases, wall = run.out, run.state, run.phases, run.wall
    m, method_name = recipe.mlpruning, recipe.prune.method
    layers = model.config.num_hidden_layers
    dense_weights = kept_encoder_weights(model)
    plan = shrinker.shrink_schedule(recipe)
    block_stage = plan.block_epochs > 0
    warnings = list(warnings or [])  # the pre-training checks' (the budget) come first

    def train(student, key, method, distiller, epochs):
        return run.train(student, key, run.settings(epochs, recipe.prune.lr), method, distiller)

    # -- step 1: choose heads/units (and rows), then shrink -----------------------------------------------
    key = f"phase0-{method_name}-{plan.step}"
    snapshot = out / "checkpoints" / key
    teachers = {"dense": model}  # the dense fine-tuned model (copied before step 1 trains it in place)

    def choose_and_shrink() -> tuple[nn.Module, PhaseResult, list, list[str]]:
        teachers["dense"] = copy.deepcopy(model)
        targets = resolve_targets(model)
        method = shrinker.from_config(recipe)
        began = time.perf_counter()
        if plan.first_epochs > 0:
            distiller = mlpruning_distiller(_eager(teachers["dense"]), layers, recipe,
                                            attention=plan.attention_distill) if m.distill else None
            method.attach(_eager(model), targets)
            result = train(model, key, method, distiller, plan.first_epochs)
        else:
            method.attach(model, targets)
            if method.calibrated:  # a retraining-free choice (Fisher) reads labelled training examples
                method.calibrate(model, run.calibration_batches(labels=True), teacher=teachers["dense"])
            result = PhaseResult(name=key)
        method.finalize()
        if plan.first_epochs <= 0:  # a one-shot choice: its wall time is the calibration and the cut
            result.wall_time_s = time.perf_counter() - began
        warning = method.convergence_warning()
        if warning:
            log(f"warning: {warning}")
        structure = method.kept_summary()
        shrunk = shrink_model(model, method.layer_plans(layers, m.block_size if block_stage else None))
        _check_exact(model, shrunk, tokenized.dev, collator)
        result.method_history = list(method.history)
        log(f"{key}: {result.steps} steps in {result.wall_time_s:.0f}s; encoder weights kept "
            f"{kept_encoder_weights(shrunk) / dense_weights:.4f}")
        return shrunk, result, structure, [warning] if warning else []

    def save_step1(done) -> dict[str, Any]:
        shrunk, result, structure, step_warnings = done
        save(shrunk, snapshot, {"method": method_name, "step": key})
        return {"phase": result.to_dict(), "structure": structure, "warnings": step_warnings}

    def load_step1(record) -> tuple[nn.Module, PhaseResult, list, list[str]]:
        shrunk = load_pruned_model(snapshot, trust_pickle=run.trust_pickle)[0]
        return shrunk, PhaseResult(**record["phase"]), record["structure"], record.get("warnings", [])

    shrunk, result, structure, step_warnings = run_stage(state, Stage(key, choose_and_shrink, save_step1, load_step1))
    warnings += step_warnings
    phases.append(result)
    wall[key] = result.wall_time_s

    # -- step 2: block pruning of the shrunk model (MLPruning), or retraining it (the L1 baseline, and
    # MLPruning's optional fine-tune after the head/row step) --------------------------------------------
    if block_stage or plan.retrain_epochs > 0:
        key2 = f"phase1-{method_name}-block" if block_stage else "phase1-retrain"
        snapshot2 = out / "checkpoints" / key2

        def second_step() -> tuple[nn.Module, PhaseResult]:
            if block_stage:
                # rows padded to a block multiple are stored but zero: aim at the target of the *dense* weights
                keep = min(1.0, m.target * dense_weights / kept_encoder_weights(shrunk))
                method = shrinker.block_step(recipe, keep)
                distiller = mlpruning_distiller(copy.deepcopy(shrunk), layers, recipe, attention=plan.attention_distill) \
                    if m.distill else None
                method.attach(shrunk, resolve_targets(shrunk))
                result = train(shrunk, key2, method, distiller, plan.block_epochs)
                method.finalize()
                result.method_history = list(method.history)
            else:
                distiller = mlpruning_distiller(teachers["dense"], layers, recipe, attention=False) if m.distill else None
                result = train(shrunk, key2, None, distiller, plan.retrain_epochs)
            log(f"{key2}: {result.steps} steps in {result.wall_time_s:.0f}s")
            return shrunk, result

        def save_step2(done) -> dict[str, Any]:
            save(done[0], snapshot2, {"method": method_name, "step": key2})
            return {"phase": done[1].to_dict()}

        def load_step2(record) -> tuple[nn.Module, PhaseResult]:
            return load_pruned_model(snapshot2, trust_pickle=run.trust_pickle)[0], PhaseResult(**record["phase"])

        shrunk, result = run_stage(state, Stage(key2, second_step, save_step2, load_step2))
        phases.append(result)
        wall[key2] = result.wall_time_s

    # -- step 3 (qat.epochs): quantization-aware fine-tuning for the int8 export ---------------------------
    # counted before QAT: its int8 rounding sets small weights to zero, which is not pruning
    nonzero = sum(int((t.module.weight != 0).sum()) for t in resolve_targets(shrunk))
    qat = None
    if recipe.qat.epochs > 0:
        shrunk, result, qat = _qat_stage(run, shrunk, teachers["dense"] if m.distill else None)
        phases.append(result)
        wall[result.name] = result.wall_time_s

    # -- evaluate, save, report ---------------------------------------------------------------------------
    shrunk.eval()
    t1 = time.perf_counter()
    pruned_scores = evaluate_splits(shrunk, tokenized, collator, recipe.train.eval_batch_size)
    wall["eval_pruned"] = time.perf_counter() - t1
    shrunk_targets = resolve_targets(shrunk)
    remaining = nonzero / dense_weights
    model_dir = save(shrunk, out / "model", {
        "method": method_name, "pattern": None, "target": m.target, "remaining_fraction": remaining,
        "task": task.to_dict(), "seed": recipe.seed, "structure": structure, **({"qat": qat} if qat else {})})
    per_layer = kept_per_layer(shrunk)
    rows = layer_sparsity([t for t in shrunk_targets if t.module.weight.numel()], None)  # removed blocks: no row
    summary = {"target": m.target, "remaining_fraction": remaining, "dense_encoder_weights": dense_weights,
               "shrunk_encoder_weights": kept_encoder_weights(shrunk), "nonzero_encoder_weights": nonzero,
               "kept_per_layer": per_layer, "block_size": m.block_size if block_stage else None,
               "block_keep": m.block_keep if block_stage else None,
               "model_file_bytes": (model_dir / "model.safetensors").stat().st_size, "qat": qat}
    report = finish_report(run, dense_scores, pruned_scores, model_dir, rows, warnings,
                           pattern=f"{m.target:g} of encoder weights", overall_sparsity=1 - remaining,
                           all_layers_satisfy_pattern=None, structured=summary)
    primary = task.metrics[0]
    log(f"{method_name} (encoder weights kept {remaining:.4f}, target {m.target:g}): "
        f"dev {primary} {dense_scores['dev'][primary]:.4f} -> {pruned_scores['dev'][primary]:.4f}"
        f"  (report: {out / 'report.md'})")
    return report


def _qat_stage(run: Run, shrunk: nn.Module, teacher: nn.Module | None) -> tuple[nn.Module, PhaseResult, dict]:
    """``qat.epochs`` of quantization-aware fine-tuning (:func:`retraining.fine_tune_int8`), distilled from the
    dense model as the retraining is, as a resumable stage (its checkpoints hold the parametrized weights)."""
    recipe = run.recipe
    snapshot = run.out / "checkpoints" / QAT_KEY

    def fine_tune() -> tuple[nn.Module, PhaseResult, dict]:
        result, record = fine_tune_int8(shrunk, recipe, teacher, lambda epochs, lr, distiller: run.train(
            shrunk, QAT_KEY, run.settings(epochs, lr), None, distiller), run.log)
        return shrunk, result, record

    def save(done) -> dict[str, Any]:
        if run.world.is_main:
            save_shrunk_model(done[0], run.tokenizer, snapshot, {"method": recipe.prune.method, "step": QAT_KEY})
        run.world.barrier()
        return {"phase": done[1].to_dict(), "qat": done[2]}

    def load(record) -> tuple[nn.Module, PhaseResult, dict]:
        return (load_pruned_model(snapshot, trust_pickle=run.trust_pickle)[0], PhaseResult(**record["phase"]),
                record["qat"])

    return run_stage(run.state, Stage(QAT_KEY, fine_tune, save, load))


@torch.no_grad()
def _check_exact(masked: nn.Module, shrunk: nn.Module, dataset, collator, examples: int = 16) -> None:
    """The shrunk model must predict what the masked one does (a cheap guard on every run)."""
    rows = dataset.to_list()[:examples] if hasattr(dataset, "to_list") else list(dataset)[:examples]
    batch = {k: v.to(next(shrunk.parameters()).device) for k, v in collator(rows).items() if k != "labels"}
    was = masked.training, shrunk.training
    masked.eval(), shrunk.eval()
    gap = float((masked(**batch).logits - shrunk(**batch).logits).abs().max())
    masked.train(was[0]), shrunk.train(was[1])
    if gap > 1e-3:
        raise PruneformerError(f"Internal error: the shrunk model's logits differ from the masked model's by {gap:.2e}.",
                               "please report this with the recipe.yaml of the run")
