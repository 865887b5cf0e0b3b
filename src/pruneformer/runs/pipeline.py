"""One pruning run, start to finish, with every arrow going one way:

recipe -> data + model -> dense fine-tune (baseline, teacher) -> targets -> phases of methods
       -> finalize masks -> verify the pattern -> save -> report.

Each finished phase leaves a safetensors snapshot and a line in ``run_state.json``; each running phase
checkpoints every ``train.checkpoint_every`` steps. ``resume=True`` skips finished phases and continues
the interrupted one from its last checkpoint.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from ..core.patterns import parse_pattern
from ..core.sparsity import layer_sparsity, overall_sparsity
from ..core.targets import resolve_targets
from ..deploy.quantize import fp32_linears
from ..errors import PruneformerError, RecipeError
from ..methods import PruningMethod
from ..methods.registry import Phase, method_entry, method_names
from ..models.saved import save_pruned_model
from ..train.calibration import prune_layerwise
from ..train.distill import Distiller
from ..train.loop import PhaseResult, schedule_spans
from .engine import dense_reference, finish_report, open_run, summary_line
from .recipe import Recipe
from .stages import RunOptions, Stage, run_stage
from .structured import run_structured

__all__ = ["build_method", "run", "schedule"]


def schedule(recipe: Recipe) -> list[Phase]:
    """The phases a method name stands for, from the registry; retraining schedules share ``prune.epochs``."""
    return method_entry(recipe.prune.method).phases(recipe)


def build_method(phase: Phase, recipe: Recipe, masks: dict[str, torch.Tensor] | None,
                 steps: int = 0) -> PruningMethod:
    """The method of one phase, built by its own ``from_config``; ``steps`` is the phase's length."""
    return phase.build(recipe, masks, steps)


#: the data order of the pruning phases: not the dense fine-tune's, so they do not replay its batches.
PRUNING_STREAM = 1


def run(recipe: Recipe, options: RunOptions | None = None, **settings: Any) -> dict[str, Any]:
    """Execute ``recipe``; returns the report dictionary (also written to the output directory).

    ``options`` (or its fields as keywords: ``resume``, ``progress``, ``log``, ``callbacks``,
    ``trust_pickle``) say how the run is driven (:class:`~pruneformer.runs.stages.RunOptions`). Runs unchanged
    under ``torchrun`` / ``accelerate launch``: every rank trains on its shard of each batch, and only rank 0
    logs and writes files.
    """
    ctx = open_run(recipe, RunOptions.of(options, **settings))
    log, model, task, out, world = ctx.log, ctx.model, ctx.task, ctx.out, ctx.world
    pattern = parse_pattern(recipe.prune.pattern)
    targets = resolve_targets(model, recipe.prune.include, recipe.prune.exclude)
    for target in targets:  # fail before any training if the pattern cannot fit a layer
        pattern.check_shape(target.shape, target.name)
    entry = method_entry(recipe.prune.method)
    if entry.check is not None:  # e.g. structured methods: can this model be shrunk?
        entry.check(model, recipe)
    if recipe.qat.epochs and entry.shrinks is None:
        shrinking = ", ".join(n for n in method_names() if method_entry(n).shrinks is not None)
        raise RecipeError(f"qat.epochs applies to methods that shrink the model ({shrinking}), not "
                          f"'{recipe.prune.method}' (N:M and unstructured models run at the dense speed on CPUs).",
                          "drop qat.epochs (--qat-epochs) or choose a shrinking method")
    if recipe.qat.epochs:  # a bad --keep-fp32 selector fails now, not after the pruning budget
        fp32_linears(model, recipe.qat.keep_fp32)
    budget_warning = None  # a shrinking method: can it reach its target in the steps it is given?
    if entry.shrinks is not None:
        budget_warning = entry.shrinks.check_budget(recipe, -(-len(ctx.tokenized.train) // recipe.train.batch_size))
        if budget_warning:
            log(f"warning: {budget_warning}")
    ctx.wall["load"] = time.perf_counter() - ctx.t0
    bundle = ctx.bundle
    log(f"task {task.name}: train {len(bundle.train)}, dev {len(bundle.dev)}"
        f"{', test ' + str(len(bundle.test)) if bundle.test is not None else ''}; "
        f"{len(targets)} target layers, pattern {pattern.spec}, method {recipe.prune.method}")

    dense_scores = dense_reference(ctx)
    log(f"dense: {summary_line(dense_scores)}")
    if entry.shrinks:  # heads/rows/blocks, physically shrunk: structured.py
        return run_structured(ctx, dense_scores, entry.shrinks, [budget_warning] if budget_warning else [])

    distiller = None
    if recipe.distill.enabled and entry.distills:
        d = recipe.distill
        distiller = Distiller(copy.deepcopy(model), d.temperature, d.alpha, d.hidden_weight)

    # -- pruning phases: one lr schedule and one data order over the whole budget ---------------------------
    masks: dict[str, torch.Tensor] | None = None
    warnings: list[str] = []
    plan = schedule(recipe)
    steps_per_epoch = -(-len(ctx.tokenized.train) // recipe.train.batch_size)
    spans, schedule_steps = schedule_spans([p.epochs for p in plan], steps_per_epoch)
    for index, phase_spec in enumerate(plan):
        key = f"phase{index}-{phase_spec.name}"
        snapshot, mask_file = out / "checkpoints" / f"{key}.safetensors", out / "checkpoints" / f"{key}.masks.safetensors"

        def prune(index=index, phase_spec=phase_spec, key=key, masks=masks) -> tuple[PhaseResult, dict, list[str]]:
            method = build_method(phase_spec, recipe, masks, steps=spans[index][1] - spans[index][0])
            method.attach(model, targets)
            if method.calibrates:  # one-shot from the task's own training text, layer by layer
                t_phase = time.perf_counter()
                prune_layerwise(model, method, ctx.calibration_batches(), progress=ctx.progress)
                result = PhaseResult(name=key, wall_time_s=time.perf_counter() - t_phase,
                                     method_history=list(method.history))
            elif method.trains and spans[index][1] > spans[index][0]:
                settings = ctx.settings(phase_spec.epochs, recipe.prune.lr, span=spans[index],
                                        schedule_steps=schedule_steps, data_stream=PRUNING_STREAM)
                result = ctx.train(model, key, settings, method, distiller if phase_spec.teacher else None)
            else:
                result = PhaseResult(name=key, method_history=list(method.history))
            new_masks = method.finalize()
            warning = method.convergence_warning()
            if warning:
                log(f"warning: {warning}")
            ctx.wall[key] = result.wall_time_s
            log(f"{key}: {result.steps} steps in {result.wall_time_s:.0f}s")
            return result, new_masks, [warning] if warning else []

        def save(done, snapshot=snapshot, mask_file=mask_file) -> dict[str, Any]:
            result, new_masks, phase_warnings = done
            if world.is_main:
                save_model(model, str(snapshot))
                save_file({k: v.contiguous() for k, v in new_masks.items()}, str(mask_file))
            return {"phase": result.to_dict(), "warnings": phase_warnings}

        def load(record, snapshot=snapshot, mask_file=mask_file) -> tuple[PhaseResult, dict, list[str]]:
            load_model(model, str(snapshot))
            return (PhaseResult(**record["phase"]), {k: v.bool() for k, v in load_file(str(mask_file)).items()},
                    record.get("warnings", []))

        result, masks, phase_warnings = run_stage(ctx.state, Stage(key, prune, save, load))
        warnings += phase_warnings
        ctx.phases.append(result)

    # -- verify, evaluate, save, report ---------------------------------------------------------------
    pruned = entry.prunes
    layers = layer_sparsity(targets, pattern if pruned else None)
    satisfied = all(r.get("satisfies_pattern", True) for r in layers) if pruned else None
    if pruned and not pattern.is_global and not satisfied:
        bad = next(r["layer"] for r in layers if not r["satisfies_pattern"])
        raise PruneformerError(f"Internal error: layer {bad} does not satisfy {pattern.spec} after pruning.",
                               "please report this with the recipe.yaml of the run")
    t1 = time.perf_counter()
    pruned_scores = ctx.scores() if pruned else dense_scores
    ctx.wall["eval_pruned"] = time.perf_counter() - t1
    model_dir = out / "model"
    if world.is_main:
        save_pruned_model(model, ctx.tokenizer, model_dir, {
            "method": recipe.prune.method, "pattern": pattern.spec if pruned else None,
            "targets": [t.name for t in targets], "task": task.to_dict(), "seed": recipe.seed})
    dense_step = ctx.phases[0].mean_step_time_s
    admm_steps = [p.mean_step_time_s for p in ctx.phases if p.name.endswith("-admm") and p.mean_step_time_s]
    report = finish_report(ctx, dense_scores, pruned_scores, model_dir, layers, warnings,
                           pattern=pattern.spec if pruned else "dense", overall_sparsity=overall_sparsity(layers),
                           all_layers_satisfy_pattern=satisfied,
                           admm_step_time_ratio=(admm_steps[0] / dense_step) if admm_steps and dense_step else None)
    log(f"{recipe.prune.method} {pattern.spec if pruned else ''}: {summary_line(pruned_scores)}")
    primary = task.metrics[0]
    log(f"dense vs pruned dev {primary}: {dense_scores['dev'][primary]:.4f} -> {pruned_scores['dev'][primary]:.4f}"
        f"  (report: {out / 'report.md'})")
    return report
