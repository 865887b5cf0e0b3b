"""The run engine's top half, shared by ``prune`` (N:M and structured) and ``spp-search``: open a run
(output directory, run state, seeding, data, model), then the dense reference (trained once, cached in the
run state, resumable), then the command's own stages on :class:`Run`'s helpers.

Why one place: the commands used to repeat this setup and had drifted (one could resume, one dropped
``trust_pickle``). Every stage records itself in ``run_state.json`` through :class:`RunState`, so a rerun
with ``resume=True`` skips finished stages and continues the interrupted one from its last checkpoint.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_model, save_model
from torch import nn
from transformers import DataCollatorWithPadding, set_seed

from ..data import DataBundle, load_data, tokenize_bundle
from ..data.images import ImageCollator, image_bundle
from ..errors import PruneformerError, RecipeError
from ..families import family_of
from ..methods import PruningMethod
from ..models.loading import load_classifier
from ..models.saved import read_pruning_info, save_pruned_model
from ..train.distill import Distiller
from ..train.distributed import current as current_world
from ..train.evaluation import evaluate_splits
from ..train.loop import PhaseResult, TrainSettings, train_phase
from .recipe import DataConfig, recipe_to_yaml
from .report import write_report
from .stages import RunOptions, Stage, run_stage

STATE_FILE = "run_state.json"


def quiet_library_progress() -> None:
    """Silence datasets' and transformers' own bars (tokenising, loading shards): ours cover long work."""
    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()


def silent_log(_: str) -> None:
    """The log of every rank but 0."""


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


def train_settings(recipe: Any, epochs: float, lr: float, progress: bool, span: tuple[int, int] | None = None,
                   schedule_steps: int | None = None, data_stream: int = 0) -> TrainSettings:
    t = recipe.train
    return TrainSettings(epochs=epochs, lr=lr, batch_size=t.batch_size, eval_batch_size=t.eval_batch_size,
                         weight_decay=t.weight_decay, warmup_ratio=t.warmup_ratio, max_grad_norm=t.max_grad_norm,
                         seed=recipe.seed, log_every=t.log_every, checkpoint_every=t.checkpoint_every,
                         group_by_length=t.group_by_length, progress=progress, span=span,
                         schedule_steps=schedule_steps, data_stream=data_stream)


def data_signature(recipe: Any) -> str:
    """What the dense scores depend on: the data settings and the split seed."""
    return json.dumps({"data": recipe.data.model_dump(mode="json"), "seed": recipe.seed}, sort_keys=True)


class RunState:
    """``run_state.json``: which stages are finished, so ``--resume`` can skip them."""

    def __init__(self, directory: Path, write: bool = True, name: str = STATE_FILE) -> None:
        self.path = directory / name
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


#: the tokenized columns a calibration batch passes to the model (labels stay out).
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class Run:
    """One open run: its recipe, output directory, state, data and model, and the helpers its stages use."""

    recipe: Any
    out: Path
    state: RunState
    options: RunOptions
    log: Callable[[str], None]  # the options' log on rank 0, silent elsewhere
    t0: float
    wall: dict[str, float] = field(default_factory=dict)
    phases: list[PhaseResult] = field(default_factory=list)
    bundle: Any = None
    model: Any = None
    tokenizer: Any = None
    tokenized: Any = None
    collator: Any = None

    @property
    def world(self):
        return current_world()

    @property
    def progress(self) -> bool:
        return self.options.progress

    @property
    def trust_pickle(self) -> bool:
        return self.options.trust_pickle

    @property
    def task(self):
        return self.bundle.task

    def settings(self, epochs: float, lr: float, **kwargs: Any) -> TrainSettings:
        return train_settings(self.recipe, epochs, lr, self.progress, **kwargs)

    def scores(self, model: nn.Module | None = None) -> dict[str, dict[str, float]]:
        return evaluate_splits(model or self.model, self.tokenized, self.collator, self.recipe.train.eval_batch_size)

    def calibration_batches(self, labels: bool = False) -> list[dict[str, torch.Tensor]]:
        """``calibration.samples`` training examples (a sample fixed by the seed): padded batches with masks, or
        image batches."""
        c = self.recipe.calibration
        train = self.tokenized.train
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.recipe.seed))[:c.samples]
        rows = [train[int(i)] for i in order]
        device = next(self.model.parameters()).device
        batches = [self.collator(rows[i:i + c.batch_size]) for i in range(0, len(rows), c.batch_size)]
        # model inputs only (token ids and masks, or pixels); the labels only for methods that need a loss
        wanted = (*MODEL_INPUTS, "pixel_values", *(("labels",) if labels else ()))
        return [{k: v.to(device) for k, v in b.items() if k in wanted} for b in batches]

    def train(self, model: nn.Module, key: str, settings: TrainSettings, method: PruningMethod | None = None,
              distiller: Distiller | None = None, dev: bool = True, checkpoints: bool = True) -> PhaseResult:
        """One phase of the loop, checkpointed under ``checkpoints/<key>`` and resumable."""
        return train_phase(model, self.tokenized.train, self.collator, settings, name=key, method=method,
                           distiller=distiller, dev_dataset=self.tokenized.dev if dev else None,
                           metrics=self.task.metrics, checkpoint_dir=self.out / "checkpoints" / key if checkpoints
                           else None, resume=self.options.resume, callbacks=self.options.callbacks,
                           trust_pickle=self.options.trust_pickle)


def refuse_finished_run(out: Path, resume: bool, state_name: str = STATE_FILE) -> None:
    """One line, before any work, when ``out`` holds a run (its ``state_name`` file) and ``resume`` is off."""
    if (out / state_name).is_file() and not resume:
        raise PruneformerError(f"Output directory '{out}' already holds a run ({state_name}).",
                               "pass --resume to continue it, or choose another --output-dir")


def claim_output_dir(out: Path, resume: bool, recipe_yaml: str, state_name: str = STATE_FILE,
                     subdirs: tuple[str, ...] = ("checkpoints",)) -> RunState:
    """A run's output directory, claimed: refused if it holds a run and ``resume`` is off; ``subdirs`` and
    ``recipe.yaml`` written by rank 0 once every rank has looked. Every command's runner starts here
    (``compare`` too, with its own state file and no checkpoints of its own)."""
    world = current_world()
    refuse_finished_run(out, resume, state_name)
    world.barrier()  # every rank has looked before rank 0 writes
    if world.is_main:
        try:
            out.mkdir(parents=True, exist_ok=True)
            for sub in subdirs:
                (out / sub).mkdir(exist_ok=True)
            (out / "recipe.yaml").write_text(recipe_yaml)
        except OSError as exc:
            raise PruneformerError(f"Cannot write the output directory '{out}': {exc.strerror or exc}.",
                                   "choose another --output-dir") from None
    return RunState(out, write=world.is_main, name=state_name)


def open_run(recipe: Any, options: RunOptions) -> Run:
    """Check and claim the output directory, seed, load the data and the model; fail before any training.

    Runs unchanged under ``torchrun``: one rank fetches and caches the data, and the fresh classifier head is
    rank 0's on every rank; only rank 0 writes.
    """
    quiet_library_progress()
    world = current_world()
    out = Path(recipe.output_dir)
    state = claim_output_dir(out, options.resume, recipe_to_yaml(recipe))
    run = Run(recipe, out, state, options, options.log if world.is_main else silent_log, time.perf_counter())
    set_seed(recipe.seed)
    with world.main_first():  # one rank fetches and caches the data, the others read the cache
        run.bundle = prepare_data(recipe.data, recipe.seed)
    task = run.bundle.task
    run.model, run.tokenizer = load_classifier(recipe.dense.checkpoint or recipe.model, task.num_labels,
                                               task.problem_type, task.label_names, trust_pickle=options.trust_pickle)
    run.model.to(world.device)
    world.broadcast_module(run.model)  # the fresh classifier head is rank 0's on every rank
    run.tokenized, run.collator = model_inputs(run.bundle, run.model, run.tokenizer, recipe)
    return run


def set_image_size(processor: Any, model: nn.Module, size: int) -> None:
    """In place: ``processor`` crops ``size`` x ``size`` pixels (the processor is saved with the pruned model, so
    export, latency and inference see the same resolution). Families whose position embeddings are fixed to
    the config's ``image_size`` (ViT, DeiT) refuse another size; DINOv2 interpolates them."""
    family = family_of(model)
    settings = getattr(model.config, "base_config", None) or model.config.to_dict()  # a shrunk model: its family's
    native, patch = settings.get("image_size"), settings.get("patch_size") or 1
    if size % patch:
        raise RecipeError(f"data.image_size {size} is not a multiple of the model's patch size {patch}.",
                          f"use a multiple of {patch}, e.g. {size // patch * patch or patch}")
    if size != native and not family.extra.get("interpolates_positions"):
        raise RecipeError(f"{family.name} models see only their config's image_size {native}, not {size}.",
                          f"drop data.image_size or set it to {native}")
    if getattr(processor, "do_center_crop", False) and getattr(processor, "crop_size", None):
        processor.size = {"shortest_edge": round(size * 8 / 7)}
        processor.crop_size = {"height": size, "width": size}
    else:
        processor.size = {"height": size, "width": size}


def model_inputs(bundle: DataBundle, model: nn.Module, preprocessor: Any, recipe: Any) -> tuple[DataBundle, Any]:
    """The splits as the model's inputs and the collator that batches them, by the model family's modality:
    token ids padded per batch, or image paths read into pixels by the model's image processor."""
    family = family_of(model)
    if family.modality == "image":  # the "tokenizer" is the model's image processor
        if recipe.data.image_size:
            set_image_size(preprocessor, model, recipe.data.image_size)
        return image_bundle(bundle, recipe.data.augment), ImageCollator(preprocessor, seed=recipe.seed)
    return tokenize_bundle(bundle, preprocessor, recipe.data.max_length), DataCollatorWithPadding(preprocessor)


def dense_reference(run: Run, dev: bool = True, save_dir: bool = True) -> dict[str, dict[str, float]]:
    """The dense fine-tune (baseline, teacher, starting point), trained once and cached in the run state.

    ``dev``: score dev at each epoch's end while training (the pruning runs; the SPP search does not, and
    since scoring draws a DataLoader seed, that choice is part of the run's numbers). ``save_dir``: save the
    fine-tuned model as ``dense/`` for reuse with ``dense.checkpoint``.
    """
    recipe, out, world = run.recipe, run.out, run.world
    snapshot = out / "checkpoints" / "dense.safetensors"
    signature = data_signature(recipe)

    def train() -> tuple[PhaseResult, dict[str, dict[str, float]]]:
        if recipe.dense.checkpoint is None and recipe.dense.epochs > 0:
            phase = run.train(run.model, "dense", run.settings(recipe.dense.epochs, recipe.dense.lr), dev=dev)
        else:
            phase = PhaseResult("dense")  # reused checkpoint (or no dense epochs): nothing trained here
        known = read_pruning_info(recipe.dense.checkpoint) if recipe.dense.checkpoint else None
        if known and known.get("data_signature") == signature and known.get("scores"):
            return phase, known["scores"]  # the checkpoint was scored on exactly this data already
        t1 = time.perf_counter()
        scores = run.scores()
        run.wall["eval_dense"] = time.perf_counter() - t1
        return phase, scores

    def save(result: tuple[PhaseResult, dict]) -> dict[str, Any]:
        phase, scores = result
        if save_dir and phase.steps and world.is_main:
            save_pruned_model(run.model, run.tokenizer, out / "dense", {
                "method": "dense", "pattern": None, "task": run.task.to_dict(), "scores": scores,
                "data_signature": signature})
        if world.is_main:
            save_model(run.model, str(snapshot))
        return {"phase": phase.to_dict(), "scores": scores}

    def load(record: dict[str, Any]) -> tuple[PhaseResult, dict]:
        load_model(run.model, str(snapshot))
        return PhaseResult(**record["phase"]), record["scores"]

    phase, scores = run_stage(run.state, Stage("dense", train, save, load))
    run.phases.append(phase)
    run.wall["dense"] = run.phases[0].wall_time_s
    return scores


def summary_line(scores: dict[str, dict[str, float]]) -> str:
    return "; ".join(f"{split} " + ", ".join(f"{k} {v:.4f}" for k, v in vals.items()) for split, vals in scores.items())


def finish_report(run: Run, dense_scores: dict, pruned_scores: dict, model_dir: Path, layers: list[dict[str, Any]],
                  warnings: list[str], **fields: Any) -> dict[str, Any]:
    """The one report of a classifier run (N:M or structured): the common fields, then ``fields`` (pattern,
    sparsity, the structured section...); written as report.json / report.md / training_curves.png."""
    recipe, bundle, task = run.recipe, run.bundle, run.task
    run.wall["total"] = time.perf_counter() - run.t0
    report = {
        "model": str(recipe.model), "method": recipe.prune.method, "pattern": fields.pop("pattern"),
        "seed": recipe.seed, "task": task.to_dict(),
        "data_sizes": {"train": len(bundle.train), "dev": len(bundle.dev),
                       "test": len(bundle.test) if bundle.test is not None else 0},
        "dense": dense_scores, "pruned": pruned_scores, "primary_metric": task.metrics[0],
        "overall_sparsity": fields.pop("overall_sparsity"),
        "all_layers_satisfy_pattern": fields.pop("all_layers_satisfy_pattern"), "layers": layers, **fields,
        "phases": [p.to_dict() for p in run.phases], "wall_time_s": run.wall,
        "admm_step_time_ratio": fields.get("admm_step_time_ratio"),
        "model_dir": str(model_dir), "recipe": recipe.model_dump(mode="json"), "warnings": warnings,
    }
    if run.world.is_main:
        write_report(report, run.out)
    run.world.barrier()  # every rank returns once the files are there
    return report
