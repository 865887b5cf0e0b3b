"""One pruning run, start to finish, with every arrow going one way:

recipe -> data + model -> dense fine-tune (baseline, teacher) -> targets -> phases of methods
       -> finalize masks -> verify the pattern -> save -> report.

Each finished phase leaves a safetensors snapshot and a line in ``run_state.json``; each running phase
checkpoints every ``train.checkpoint_every`` steps. ``resume=True`` skips finished phases and continues
the interrupted one from its last checkpoint.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from transformers import DataCollatorWithPadding, set_seed

from .data import DataBundle, load_data, tokenize_bundle
from .distill import Distiller
from .distributed import current as current_world
from .errors import PruneformerError, RecipeError
from .evaluation import evaluate_splits
from .io import read_pruning_info, save_pruned_model
from .methods import ADMMPruner, MagnitudePruner, MaskedFineTuner, PruningMethod, SRSTEPruner
from .models import load_classifier
from .patterns import parse_pattern
from .recipe import DataConfig, Recipe, recipe_to_yaml
from .report import write_report
from .sparsity import layer_sparsity, overall_sparsity
from .structured import STRUCTURED_METHODS, check_structured, run_structured
from .targets import resolve_targets
from .training import PhaseResult, TrainSettings, schedule_spans, train_phase

STATE_FILE = "run_state.json"


def quiet_library_progress() -> None:
    """Silence datasets' and transformers' own bars (tokenising, loading shards): ours cover long work."""
    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()


@dataclass
class Phase:
    """One stage of a schedule: a method name and the epochs it trains for."""

    name: str
    epochs: float


def schedule(recipe: Recipe) -> list[Phase]:
    """The phases a method name stands for; retraining schedules share ``prune.epochs`` in total."""
    total = recipe.prune.epochs
    admm = recipe.admm_epochs()
    return {
        "dense": [],
        "magnitude": [Phase("magnitude", 0.0)],
        "magnitude-retrain": [Phase("masked", total)],
        "srste": [Phase("srste", total)],
        "admm": [Phase("admm", admm), Phase("masked", total - admm)],
        "admm-srste": [Phase("admm", admm), Phase("srste", total - admm)],
    }[recipe.prune.method]


def continuation_factor(rho: float, rho_max: float, steps: int, interval: int, reach: float = 0.6) -> float:
    """The geometric rho factor that takes rho to rho_max after ``reach`` of the phase's Z/U updates, so the
    last updates run at full pull and the primal residual is near zero at the hard prune."""
    updates = max(1, round(reach * (steps // interval)))
    return max(1.0, (rho_max / rho) ** (1.0 / updates))


def build_method(phase: Phase, recipe: Recipe, masks: dict[str, torch.Tensor] | None,
                 steps: int = 0) -> PruningMethod:
    """The method of one phase from its recipe section; ``steps`` is the phase's length in optimizer steps."""
    pattern = parse_pattern(recipe.prune.pattern)
    if phase.name == "admm":
        a = recipe.admm
        factor = a.rho_factor or continuation_factor(a.rho, a.rho_max, steps, a.interval)
        return ADMMPruner(pattern, rho=a.rho, rho_schedule=a.rho_schedule, rho_factor=factor,
                          rho_max=a.rho_max, interval=a.interval, penalty=a.penalty,
                          target_residual=a.target_residual, eval_every=a.eval_every)
    if phase.name == "srste":
        r = recipe.srste
        return SRSTEPruner(pattern, lambda_w=r.lambda_w, decay=r.decay, decay_rate=r.decay_rate)
    if phase.name == "masked":
        return MaskedFineTuner(pattern, masks=masks)
    if phase.name == "magnitude":
        return MagnitudePruner(pattern)
    raise RecipeError(f"Unknown phase '{phase.name}'.", "use one of the methods listed by --help")


def prepare_data(d: DataConfig, seed: int) -> DataBundle:
    """Load the data a recipe names (embedded, local files or a GLUE directory) and apply the presets."""
    if d.source in ("embedded", "movie-sentiment"):
        bundle = load_data(d.source, seed=seed)
    elif d.glue_task:
        bundle = load_data(f"glue:{d.glue_task}:{d.source}")
    else:
        bundle = load_data(d.source, dev=d.dev_file, test=d.test_file, text_column=d.text_column,
                           text_pair_column=d.text_pair_column, label_column=d.label_column,
                           task_type=d.task_type, seed=seed)
    if d.max_train or d.max_eval:
        bundle = bundle.subsample(d.max_train, d.max_eval, seed)
    return bundle


def train_settings(recipe: Recipe, epochs: float, lr: float, progress: bool, span: tuple[int, int] | None = None,
                   schedule_steps: int | None = None, data_stream: int = 0) -> TrainSettings:
    t = recipe.train
    return TrainSettings(epochs=epochs, lr=lr, batch_size=t.batch_size, eval_batch_size=t.eval_batch_size,
                         weight_decay=t.weight_decay, warmup_ratio=t.warmup_ratio, max_grad_norm=t.max_grad_norm,
                         seed=recipe.seed, log_every=t.log_every, checkpoint_every=t.checkpoint_every,
                         group_by_length=t.group_by_length, progress=progress, span=span,
                         schedule_steps=schedule_steps, data_stream=data_stream)


#: the data order of the pruning phases: not the dense fine-tune's, so they do not replay its batches.
PRUNING_STREAM = 1


class RunState:
    """``run_state.json``: which phases are finished, so ``--resume`` can skip them."""

    def __init__(self, directory: Path, write: bool = True) -> None:
        self.path = directory / STATE_FILE
        self.write = write  # False on every rank but 0: one writer per run
        self.data: dict[str, Any] = json.loads(self.path.read_text()) if self.path.is_file() else {"done": {}}

    def done(self, key: str) -> dict[str, Any] | None:
        return self.data["done"].get(key)

    def mark(self, key: str, value: dict[str, Any]) -> None:
        self.data["done"][key] = value
        if not self.write:
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, default=str))
        tmp.replace(self.path)


def run(recipe: Recipe, resume: bool = False, progress: bool = True,
        log: Callable[[str], None] = print, callbacks=(), trust_pickle: bool = False) -> dict[str, Any]:
    """Execute ``recipe``; returns the report dictionary (also written to the output directory).

    Runs unchanged under ``torchrun`` / ``accelerate launch``: every rank trains on its shard of each batch,
    and only rank 0 logs and writes files. ``trust_pickle`` allows pickle-based model files (``--trust-pickle``).
    """
    quiet_library_progress()
    world = current_world()
    if not world.is_main:
        log = silent_log
    out = Path(recipe.output_dir)
    state_path = out / STATE_FILE
    if state_path.is_file() and not resume:
        raise PruneformerError(f"Output directory '{out}' already holds a run.",
                               "pass --resume to continue it, or choose another --output-dir")
    if world.is_main:
        try:
            (out / "checkpoints").mkdir(parents=True, exist_ok=True)
            (out / "recipe.yaml").write_text(recipe_to_yaml(recipe))
        except OSError as exc:
            raise PruneformerError(f"Cannot write the output directory '{out}': {exc.strerror or exc}.",
                                   "choose another --output-dir") from None
    state = RunState(out, write=world.is_main)
    wall: dict[str, float] = {}
    t0 = time.perf_counter()
    set_seed(recipe.seed)

    with world.main_first():  # one rank fetches and caches the data, the others read the cache
        bundle = prepare_data(recipe.data, recipe.seed)
    task = bundle.task
    model_source = recipe.dense.checkpoint or recipe.model
    model, tokenizer = load_classifier(model_source, task.num_labels, task.problem_type, task.label_names,
                                       trust_pickle=trust_pickle)
    model.to(world.device)
    world.broadcast_module(model)  # the fresh classifier head is rank 0's on every rank
    tokenized = tokenize_bundle(bundle, tokenizer, recipe.data.max_length)
    collator = DataCollatorWithPadding(tokenizer)
    pattern = parse_pattern(recipe.prune.pattern)
    targets = resolve_targets(model, recipe.prune.include, recipe.prune.exclude)
    for target in targets:  # fail before any training if the pattern cannot fit a layer
        pattern.check_shape(target.shape, target.name)
    if recipe.prune.method in STRUCTURED_METHODS:  # heads/rows/blocks, physically shrunk: structured.py
        check_structured(model, recipe)
    wall["load"] = time.perf_counter() - t0
    log(f"task {task.name}: train {len(bundle.train)}, dev {len(bundle.dev)}"
        f"{', test ' + str(len(bundle.test)) if bundle.test is not None else ''}; "
        f"{len(targets)} target layers, pattern {pattern.spec}, method {recipe.prune.method}")

    def scores() -> dict[str, dict[str, float]]:
        return evaluate_splits(model, tokenized, collator, recipe.train.eval_batch_size)

    phases: list[PhaseResult] = []
    # -- dense fine-tune ------------------------------------------------------------------------------
    dense_done = state.done("dense")
    dense_dir = out / "dense"
    if dense_done:
        load_model(model, str(out / "checkpoints" / "dense.safetensors"))
        phases.append(PhaseResult(**dense_done["phase"]))
        dense_scores = dense_done["scores"]
    else:
        signature = data_signature(recipe)
        if recipe.dense.checkpoint is None and recipe.dense.epochs > 0:
            phase = train_phase(model, tokenized.train, collator,
                                train_settings(recipe, recipe.dense.epochs, recipe.dense.lr, progress),
                                name="dense", dev_dataset=tokenized.dev, metrics=task.metrics,
                                checkpoint_dir=out / "checkpoints" / "dense", resume=resume, callbacks=callbacks,
                                trust_pickle=trust_pickle)
        else:
            phase = PhaseResult("dense")  # reused checkpoint (or no dense epochs): nothing trained here
        phases.append(phase)
        known = read_pruning_info(recipe.dense.checkpoint) if recipe.dense.checkpoint else None
        if known and known.get("data_signature") == signature and known.get("scores"):
            dense_scores = known["scores"]  # the checkpoint was scored on exactly this data already
        else:
            t1 = time.perf_counter()
            dense_scores = scores()
            wall["eval_dense"] = time.perf_counter() - t1
        if phase.steps and world.is_main:
            save_pruned_model(model, tokenizer, dense_dir, {"method": "dense", "pattern": None, "task": task.to_dict(),
                                                            "scores": dense_scores, "data_signature": signature})
        if world.is_main:
            save_model(model, str(out / "checkpoints" / "dense.safetensors"))
        state.mark("dense", {"phase": phase.to_dict(), "scores": dense_scores})
    wall["dense"] = phases[0].wall_time_s
    log(f"dense: {_summary(dense_scores)}")
    if recipe.prune.method in STRUCTURED_METHODS:
        context = dict(model=model, tokenizer=tokenizer, tokenized=tokenized, collator=collator, task=task, bundle=bundle,
                       state=state, phases=phases, dense_scores=dense_scores, wall=wall, t0=t0, out=out)
        return run_structured(recipe, context, lambda epochs, lr: train_settings(recipe, epochs, lr, progress),
                              resume, log, callbacks)

    distiller = None
    if recipe.distill.enabled and recipe.prune.method not in ("dense", "magnitude"):
        d = recipe.distill
        distiller = Distiller(copy.deepcopy(model), d.temperature, d.alpha, d.hidden_weight)

    # -- pruning phases: one lr schedule and one data order over the whole budget ---------------------------
    masks: dict[str, torch.Tensor] | None = None
    warnings: list[str] = []
    plan = schedule(recipe)
    steps_per_epoch = -(-len(tokenized.train) // recipe.train.batch_size)
    spans, schedule_steps = schedule_spans([p.epochs for p in plan], steps_per_epoch)
    for index, phase_spec in enumerate(plan):
        key = f"phase{index}-{phase_spec.name}"
        snapshot = out / "checkpoints" / f"{key}.safetensors"
        done = state.done(key)
        if done:
            load_model(model, str(snapshot))
            masks = {k: v.bool() for k, v in load_file(str(out / "checkpoints" / f"{key}.masks.safetensors")).items()}
            phases.append(PhaseResult(**done["phase"]))
            warnings += done.get("warnings", [])
            continue
        method = build_method(phase_spec, recipe, masks, steps=spans[index][1] - spans[index][0])
        method.attach(model, targets)
        if method.trains and spans[index][1] > spans[index][0]:
            settings = train_settings(recipe, phase_spec.epochs, recipe.prune.lr, progress, span=spans[index],
                                 schedule_steps=schedule_steps, data_stream=PRUNING_STREAM)
            teacher = distiller if phase_spec.name != "admm" or recipe.distill.during_admm else None
            result = train_phase(model, tokenized.train, collator, settings,
                                 name=key, method=method, distiller=teacher, dev_dataset=tokenized.dev,
                                 metrics=task.metrics, checkpoint_dir=out / "checkpoints" / key,
                                 resume=resume, callbacks=callbacks, trust_pickle=trust_pickle)
        else:
            result = PhaseResult(name=key, method_history=list(method.history))
        masks = method.finalize()
        warning = method.convergence_warning()
        if warning:
            warnings.append(warning)
            log(f"warning: {warning}")
        if world.is_main:
            save_model(model, str(snapshot))
            save_file({k: v.contiguous() for k, v in masks.items()}, str(out / "checkpoints" / f"{key}.masks.safetensors"))
        state.mark(key, {"phase": result.to_dict(), "warnings": [warning] if warning else []})
        phases.append(result)
        wall[key] = result.wall_time_s
        log(f"{key}: {result.steps} steps in {result.wall_time_s:.0f}s")

    # -- verify, evaluate, save, report ---------------------------------------------------------------
    pruned = recipe.prune.method != "dense"
    layers = layer_sparsity(targets, pattern if pruned else None)
    satisfied = all(r.get("satisfies_pattern", True) for r in layers) if pruned else None
    if pruned and not pattern.is_global and not satisfied:
        bad = next(r["layer"] for r in layers if not r["satisfies_pattern"])
        raise PruneformerError(f"Internal error: layer {bad} does not satisfy {pattern.spec} after pruning.",
                               "please report this with the recipe.yaml of the run")
    t1 = time.perf_counter()
    pruned_scores = scores() if pruned else dense_scores
    wall["eval_pruned"] = time.perf_counter() - t1
    model_dir = out / "model"
    if world.is_main:
        save_pruned_model(model, tokenizer, model_dir, {
            "method": recipe.prune.method, "pattern": pattern.spec if pruned else None,
            "targets": [t.name for t in targets], "task": task.to_dict(), "seed": recipe.seed})
    wall["total"] = time.perf_counter() - t0

    dense_step = phases[0].mean_step_time_s
    admm_steps = [p.mean_step_time_s for p in phases if p.name.endswith("-admm") and p.mean_step_time_s]
    report = {
        "model": str(recipe.model), "method": recipe.prune.method, "pattern": pattern.spec if pruned else "dense",
        "seed": recipe.seed, "task": task.to_dict(),
        "data_sizes": {"train": len(bundle.train), "dev": len(bundle.dev),
                       "test": len(bundle.test) if bundle.test is not None else 0},
        "dense": dense_scores, "pruned": pruned_scores, "primary_metric": task.metrics[0],
        "overall_sparsity": overall_sparsity(layers), "all_layers_satisfy_pattern": satisfied,
        "layers": layers, "phases": [p.to_dict() for p in phases], "wall_time_s": wall,
        "admm_step_time_ratio": (admm_steps[0] / dense_step) if admm_steps and dense_step else None,
        "model_dir": str(model_dir), "recipe": recipe.model_dump(mode="json"), "warnings": warnings,
    }
    if world.is_main:
        write_report(report, out)
    world.barrier()  # every rank returns once the files are there
    primary = task.metrics[0]
    log(f"{recipe.prune.method} {pattern.spec if pruned else ''}: {_summary(pruned_scores)}")
    log(f"dense vs pruned dev {primary}: {dense_scores['dev'][primary]:.4f} -> {pruned_scores['dev'][primary]:.4f}"
        f"  (report: {out / 'report.md'})")
    return report


def data_signature(recipe: Recipe) -> str:
    """What the dense scores depend on: the data settings and the split seed."""
    return json.dumps({"data": recipe.data.model_dump(mode="json"), "seed": recipe.seed}, sort_keys=True)


def silent_log(_: str) -> None:
    """The log of every rank but 0."""


def _summary(scores: dict[str, dict[str, float]]) -> str:
    return "; ".join(f"{split} " + ", ".join(f"{k} {v:.4f}" for k, v in vals.items()) for split, vals in scores.items())
