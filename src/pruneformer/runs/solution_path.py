"""SPP end to end: one search writes a path record; extraction cuts smaller models at any ratios from it.

``search(recipe)``: data + model -> optional dense fine-tune -> the SPP search (masks on the paired inner
dimensions, weights frozen by default) -> ``<output_dir>/model/`` (the model the search ran on) with
``spp_path.safetensors`` beside it, ``spp_path.png`` and ``spp_search.json``.

``extract(search_dir, ratios)``: for each ratio, the units that entered the path earliest are kept
(per group, global over layers), the model is physically sliced, optionally fine-tuned briefly, scored,
and saved as ``ratio-0.30/`` (loadable with plain transformers). No search is rerun.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors.torch import load_model, save_model
from torch import nn
from transformers import set_seed

from ..compress.paired import extract as slice_units
from ..compress.paired import removed_parameters
from ..core.targets import resolve_targets
from ..data import DataBundle
from ..errors import CheckpointError, PruneformerError
from ..methods.spp.cut import check_ratio
from ..methods.spp.plots import plot_accuracy_vs_ratio, plot_solution_path
from ..methods.spp.record import PATH_FILE, PathRecord, model_fingerprint
from ..methods.spp.search import SPPSearch
from ..models.saved import load_pruned_model, save_pruned_model, save_shrunk_model
from ..train.distributed import current as current_world
from ..train.evaluation import evaluate_splits
from ..train.loop import PhaseResult, train_phase
from .engine import (
    RunState,
    data_signature,
    dense_reference,
    model_inputs,
    open_run,
    prepare_data,
    quiet_library_progress,
    silent_log,
    train_settings,
)
from .recipe import Recipe, load_recipe
from .report import markdown_table, write_report
from .retraining import QAT_KEY, fine_tune_int8, mlpruning_distiller, qat_settings
from .stages import RunOptions, Stage, run_stage

SEARCH_SUMMARY = "spp_search.json"
EXTRACT_SUMMARY = "spp_extract.json"
EXTRACT_STATE = "extract_state.json"


def build_search(recipe: Recipe) -> SPPSearch:
    s = recipe.spp
    return SPPSearch(kappa=s.kappa, nu=s.nu, lam=s.lam, alpha=s.alpha, granularity=s.granularity,
                     train_weights=s.train_weights, mask_optimizer=s.mask_optimizer, mask_lr=s.mask_lr,
                     record_every=s.record_every)


def _scores(model, tokenized: DataBundle, collator, recipe: Recipe) -> dict[str, dict[str, float]]:
    return evaluate_splits(model, tokenized, collator, recipe.train.eval_batch_size)


def load_task(recipe: Recipe, model, tokenizer) -> tuple[DataBundle, Any]:
    return model_inputs(prepare_data(recipe.data, recipe.seed), model, tokenizer, recipe)


def search(recipe: Recipe, options: RunOptions | None = None, **settings: Any) -> dict[str, Any]:
    """Run the SPP search of ``recipe`` (its ``spp`` section) and save the model with its path record.

    On the run engine: the dense reference and the search are stages of ``run_state.json``, checkpointed
    every ``train.checkpoint_every`` steps, so ``resume=True`` continues an interrupted search exactly.
    Runs unchanged under ``torchrun``: every rank trains its shard (SPP's masks are all-reduced with the
    weights, so the path is the same everywhere); only rank 0 logs and writes, the others wait for it.
    ``options`` or their fields as keywords: :class:`~pruneformer.runs.stages.RunOptions`.
    """
    out = Path(recipe.output_dir)
    if (out / "model" / PATH_FILE).is_file():
        raise PruneformerError(f"Output directory '{out}' already holds an SPP search.",
                               "extract from it with `pruneformer spp-extract`, or choose another --output-dir")
    run = open_run(recipe, RunOptions.of(options, **settings))
    model, world, log = run.model, run.world, run.log
    method = build_search(recipe)
    targets = resolve_targets(model)
    method.attach(model, targets)  # fails on an unsupported layout before any training
    method.finalize()
    dense_scores = dense_reference(run, dev=False, save_dir=False)  # no dev scoring while training: as before
    log(f"dense: dev {dense_scores['dev']}")

    key, snapshot = "spp-search", out / "checkpoints" / "spp-search-record"
    weights = out / "checkpoints" / "spp-search.safetensors"

    def run_search() -> tuple[PhaseResult, PathRecord, str | None]:
        method = build_search(recipe)
        method.attach(model, targets)
        phase = run.train(model, key, run.settings(recipe.spp.epochs, recipe.prune.lr), method, dev=False)
        method.finalize()
        return phase, PathRecord.from_search(method, model_fingerprint(model)), method.convergence_warning()

    def save(done) -> dict[str, Any]:
        phase, record, warning = done
        if world.is_main:
            save_model(model, str(weights))
            record.save(snapshot)
        return {"phase": phase.to_dict(), "warning": warning}

    def load(done: dict[str, Any]) -> tuple[PhaseResult, PathRecord, str | None]:
        load_model(model, str(weights))
        return PhaseResult(**done["phase"]), PathRecord.load(snapshot), done["warning"]

    phase, record, warning = run_stage(run.state, Stage(key, run_search, save, load))
    run.wall["search"] = phase.wall_time_s
    after = dense_scores if not recipe.spp.train_weights else run.scores()
    model_dir = out / "model"
    if world.is_main:
        save_pruned_model(model, run.tokenizer, model_dir, {
            "method": "spp-search", "pattern": None, "task": run.task.to_dict(), "scores": after, "seed": recipe.seed,
            "data_signature": data_signature(recipe)})
        record.save(model_dir)
        plot_solution_path(record, out / "spp_path.png")
    if warning:
        log(f"warning: {warning}")
    entered = {g: int((e >= 0).sum()) for g, e in record.entry.items()}
    summary = {"steps": record.steps, "entered": entered, "units": {g: e.numel() for g, e in record.entry.items()},
               "dense": dense_scores, "model_scores": after,
               "wall_time_s": {**run.wall, "total": time.perf_counter() - run.t0},
               "search_step_time_s": phase.mean_step_time_s, "record": str(model_dir / PATH_FILE),
               "settings": record.settings, "warning": warning}
    if world.is_main:
        write_report(summary, out, name=SEARCH_SUMMARY.removesuffix(".json"), render=render_search_markdown)
    world.barrier()
    log(f"SPP search: {record.steps} steps in {phase.wall_time_s:.0f}s; units on the path {entered} "
        f"of {summary['units']}; record {model_dir / PATH_FILE}")
    return summary


def render_search_markdown(summary: dict[str, Any]) -> str:
    """The SPP search's report as Markdown: which units entered the path, and the scores beside it."""
    rows = [{"group": g, "entered": summary["entered"][g], "units": summary["units"][g]} for g in summary["units"]]
    scores = [{"model": name, **{f"{split} {k}": v for split, vals in summary[key].items() for k, v in vals.items()}}
              for name, key in (("dense", "dense"), ("after the search", "model_scores"))]
    lines = ["# pruneformer SPP search", "", f"- steps: {summary['steps']}; record: `{summary['record']}`",
             f"- mean search step: {summary['search_step_time_s']}s", ""]
    lines += [f"> **Warning:** {summary['warning']}", ""] if summary.get("warning") else []
    lines += ["## Units on the solution path", "", markdown_table(rows, ["group", "entered", "units"]),
              "## Scores", "", markdown_table(scores, list(scores[0]))]
    return "\n".join(lines)


def cut(model, keep: dict[str, torch.Tensor], recipe: Recipe, tokenized: DataBundle, collator,
        finetune_epochs: float, checkpoint_dir: Path | None = None,
        options: RunOptions = RunOptions(progress=False),
        teacher: nn.Module | None = None) -> tuple[Any, dict[str, Any]]:
    """Slice ``keep`` out of ``model`` (unchanged), fine-tune the smaller model briefly (checkpointed in
    ``checkpoint_dir``, continued from there with ``options.resume``), score it.

    With a ``teacher`` the fine-tune distils from it (the L1 retraining's loss, :mod:`runs.retraining`;
    :func:`extract` passes one when ``spp.distill``); with ``qat.epochs`` > 0 the cut then gets the same
    quantization-aware fine-tune as every shrunk model, checkpointed in ``<checkpoint_dir>-qat``."""
    t0 = time.perf_counter()
    shrunk = slice_units(model, keep)
    dense_params = sum(p.numel() for p in model.parameters())
    row: dict[str, Any] = {"parameters": sum(p.numel() for p in shrunk.parameters()), "dense_parameters": dense_params,
                           "removed_parameters": removed_parameters(model, keep),
                           "kept_units": {g: int(k.sum()) for g, k in keep.items()},
                           "units": {g: k.numel() for g, k in keep.items()}}
    def train(name: str, epochs: float, lr: float, distiller, directory: Path | None) -> PhaseResult:
        set_seed(recipe.seed)
        return train_phase(shrunk, tokenized.train, collator, train_settings(recipe, epochs, lr, options.progress),
                           name=name, distiller=distiller, metrics=tokenized.task.metrics, checkpoint_dir=directory,
                           resume=options.resume, callbacks=options.callbacks, trust_pickle=options.trust_pickle)

    if finetune_epochs > 0:
        layers = model.config.num_hidden_layers
        distiller = mlpruning_distiller(teacher, layers, recipe, attention=False) if teacher is not None else None
        row["finetune_steps"] = train("finetune", finetune_epochs, recipe.prune.lr, distiller, checkpoint_dir).steps
    row["distilled"] = teacher is not None and finetune_epochs > 0
    if recipe.qat.epochs > 0:
        directory = checkpoint_dir.with_name(checkpoint_dir.name + "-qat") if checkpoint_dir else None
        phase, row["qat"] = fine_tune_int8(shrunk, recipe, teacher, lambda epochs, lr, distiller: train(
            QAT_KEY, epochs, lr, distiller, directory), options.log)
        row["qat_steps"] = phase.steps
    row["scores"] = _scores(shrunk, tokenized, collator, recipe)
    row["wall_time_s"] = time.perf_counter() - t0
    return shrunk, row


def extract(search_dir: str | Path, ratios: Sequence[float], finetune_epochs: float | None = None,
            output_dir: str | Path | None = None, options: RunOptions | None = None,
            qat_epochs: float | None = None, **settings: Any) -> list[dict[str, Any]]:
    """Cut one physically smaller model per ratio from an SPP search directory, without searching again.

    Each cut is fine-tuned for ``finetune_epochs`` (default: the search recipe's ``spp.finetune_epochs``),
    distilled from the searched model with ``spp.distill``, then quantization-aware for ``qat_epochs``
    (default: the recipe's ``qat.epochs``), as every shrunk model is (:mod:`runs.retraining`).

    Each finished ratio is a line of ``extract_state.json`` and each fine-tune checkpoints under
    ``checkpoints/extract-<ratio>``: with ``resume=True`` finished ratios (cut with the same fine-tune
    epochs from the same record) are kept and an interrupted fine-tune continues from its checkpoint.

    Under ``torchrun`` every rank cuts and fine-tunes (on its shard of each batch); only rank 0 writes.
    ``options`` or their fields as keywords: :class:`~pruneformer.runs.stages.RunOptions`.
    """
    options = RunOptions.of(options, **settings)
    quiet_library_progress()
    world = current_world()
    log = options.log if world.is_main else silent_log
    ratios = [check_ratio(r) for r in ratios]
    if not ratios:
        raise PruneformerError("No ratio given.", "pass one or more, e.g. --ratio 0.3 0.5 0.7")
    search_dir = Path(search_dir)
    model_dir = search_dir / "model"
    if not (search_dir / "recipe.yaml").is_file() or not model_dir.is_dir():
        raise CheckpointError(f"'{search_dir}' is not an SPP search directory (no recipe.yaml and model/).",
                              "pass the --output-dir of `pruneformer spp-search`")
    record = PathRecord.load(model_dir)
    model, tokenizer, _ = load_pruned_model(model_dir, trust_pickle=options.trust_pickle)
    record.check_model(model, str(model_dir))
    model.to(world.device)
    recipe = load_recipe(search_dir / "recipe.yaml")
    if qat_epochs is not None:
        if qat_epochs < 0:
            raise PruneformerError(f"qat_epochs {qat_epochs:g} is negative.", "pass 0 (none) or more epochs")
        recipe = recipe.model_copy(update={"qat": recipe.qat.model_copy(update={"epochs": qat_epochs})})
    epochs = recipe.spp.finetune_epochs if finetune_epochs is None else finetune_epochs
    out = Path(output_dir) if output_dir else search_dir
    with world.main_first():
        tokenized, collator = load_task(recipe, model, tokenizer)
    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)
    state = RunState(out, write=world.is_main, name=EXTRACT_STATE)
    retraining = {"distill": recipe.spp.distill, "qat": qat_settings(recipe) if recipe.qat.epochs > 0 else None}
    teacher = copy.deepcopy(model) if recipe.spp.distill and epochs + recipe.qat.epochs > 0 else None
    rows = []
    for ratio in ratios:
        key, directory = f"extract-{ratio:.2f}", out / f"ratio-{ratio:.2f}"

        def cut_one(ratio=ratio, key=key, directory=directory) -> dict[str, Any]:
            shrunk, row = cut(model, record.keep(ratio), recipe, tokenized, collator, epochs,
                              checkpoint_dir=out / "checkpoints" / key, options=options, teacher=teacher)
            if world.is_main:
                save_shrunk_model(shrunk, tokenizer, directory, {
                    "method": "spp", "pattern": None, "ratio": ratio, "task": tokenized.task.to_dict(),
                    "record_fingerprint": record.fingerprint, **{k: v for k, v in row.items() if k != "wall_time_s"}})
            row |= {"ratio": ratio, "finetune_epochs": epochs, "model_dir": str(directory)}
            primary = tokenized.task.metrics[0]
            log(f"ratio {ratio:.2f}: {row['parameters']:,} parameters (dense {row['dense_parameters']:,}); "
                f"dev {primary} {row['scores']['dev'][primary]:.4f}; saved {directory}")
            return row

        def same_cut(done: dict[str, Any]) -> bool:  # cut from the same record with the same fine-tunes
            return (options.resume and done["finetune_epochs"] == epochs and done.get("retraining") == retraining
                    and done["record_fingerprint"] == record.fingerprint)

        rows.append(run_stage(state, Stage(
            key, cut_one, lambda row: {"row": row, "finetune_epochs": epochs, "record_fingerprint": record.fingerprint,
                                       "retraining": retraining},
            lambda done: done["row"], reuse=same_cut)))
    if world.is_main:
        previous = json.loads((out / EXTRACT_SUMMARY).read_text()) if (out / EXTRACT_SUMMARY).is_file() else []
        merged = {r["ratio"]: r for r in previous} | {r["ratio"]: r for r in rows}
        (out / EXTRACT_SUMMARY).write_text(json.dumps(sorted(merged.values(), key=lambda r: r["ratio"]), indent=2))
        plot_accuracy_vs_ratio({"SPP": sorted(merged.values(), key=lambda r: r["ratio"])},
                               tokenized.task.metrics[0], out / "accuracy_vs_ratio.png")
    world.barrier()
    return rows
