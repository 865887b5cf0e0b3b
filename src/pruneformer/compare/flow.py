"""``pruneformer compare``: every candidate on the same data, seeds and budget, and which one to use.

The flow, on top of the commands' own runners (nothing here trains or saves a model itself):

1. check the candidates (:mod:`.candidates`) and that they fit the model, before any training;
2. per seed, the dense model once (``seed<S>/dense``, a ``prune`` run with ``method: dense``);
3. per seed and candidate, one resumable run in ``seed<S>/<candidate>`` that starts from that seed's dense
   model (``dense.checkpoint``); one SPP search per seed serves all SPP ratios (``seed<S>/spp``);
4. size of every saved model, and CPU latency of all of them measured side by side in one process, in
   PyTorch and (``compare.onnx``) in ONNX Runtime fp32 and int8 (:mod:`pruneformer.compare.report`
   summarises, :mod:`pruneformer.compare.outputs` writes the table and plot).

``compare_state.json`` records every finished unit; ``--resume`` skips them and continues an interrupted run
from its own checkpoint. ``compare.jobs`` > 1 trains units in that many processes, ``compare.threads`` each.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from safetensors import safe_open
from torch import nn

from ..core.patterns import parse_pattern
from ..core.structure import check_compressible
from ..core.targets import resolve_targets
from ..errors import PruneformerError, RecipeError
from ..methods.candidates import SPP, Candidate, parse_candidates
from ..methods.registry import method_entry, sections
from ..runs.engine import STATE_FILE, RunState, claim_output_dir, prepare_data, quiet_library_progress, silent_log
from ..runs.recipe import Recipe, build_recipe, recipe_to_yaml
from ..runs.stages import RunOptions, Stage, run_stage

COMPARE_STATE = "compare_state.json"
DENSE = Candidate("dense", "dense")


def signature(recipe: Recipe) -> dict[str, Any]:
    """What makes two compares comparable: model, data, dense fine-tune, training and budget."""
    tree = recipe.model_dump(mode="json")
    return {"model": tree["model"], "data": tree["data"], "dense": tree["dense"], "train": tree["train"],
            "budget": {k: tree["prune"][k] for k in ("epochs", "lr", "include", "exclude")}}


def open_compare(recipe: Recipe, resume: bool) -> RunState:
    """Claim the output directory (or reopen it with ``resume``); refuses one made for other model or data."""
    out = Path(recipe.output_dir)
    mine = signature(recipe)
    if resume and (out / COMPARE_STATE).is_file():
        theirs = RunState(out, name=COMPARE_STATE).data.get("signature", {})
        if theirs != mine:
            differs = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            raise RecipeError(f"Compare directory '{out}' was made for another model, data or budget (differs in: "
                              f"{', '.join(differs)}).", "rerun with the settings it was made with, or choose "
                              "another --output-dir")
    state = claim_output_dir(out, resume, recipe_to_yaml(recipe), COMPARE_STATE, subdirs=())
    state.data["signature"] = mine
    return state


def check_candidates_fit(candidates: Sequence[Candidate], model: nn.Module, recipe: Recipe) -> None:
    """Fail before any training when a pattern does not divide a targeted layer or a model cannot be shrunk."""
    targets = resolve_targets(model, recipe.prune.include, recipe.prune.exclude)
    for candidate in candidates:
        try:
            if candidate.kind == "pattern":
                pattern = parse_pattern(candidate.setting)
                for target in targets:
                    pattern.check_shape(target.shape, target.name)
            elif candidate.kind == "shrink":
                entry = method_entry(candidate.method)
                if entry.check is not None:
                    entry.check(model, candidate_recipe(recipe, candidate, recipe.seed, Path(recipe.output_dir), None))
            elif candidate.kind == "spp":
                check_compressible(model)
        except PruneformerError as exc:
            raise type(exc)(f"Candidate '{candidate.label}': {exc.problem}", exc.fix) from None


def candidate_recipe(base: Recipe, candidate: Candidate, seed: int, out: Path, dense_model: Path | None) -> Recipe:
    """The recipe of one candidate's run: the base recipe with the candidate's method and setting, this
    seed, this directory, and the seed's shared dense model as its starting point."""
    tree = base.model_dump(mode="json")
    tree["seed"], tree["output_dir"] = seed, str(out)
    if dense_model is not None:
        tree["dense"]["checkpoint"] = str(dense_model)
    budget = base.prune.epochs
    if candidate.kind not in ("shrink", SPP):  # quantization-aware fine-tuning: for the smaller models' int8
        tree["qat"]["epochs"] = 0.0
    if candidate.kind == SPP:  # the search takes half of the budget, each cut's (distilled) fine-tune the other half
        tree["spp"] |= {"epochs": budget / 2, "finetune_epochs": budget / 2}
        return build_recipe(tree)
    tree["prune"]["method"] = candidate.method
    if candidate.kind == "pattern":
        tree["prune"]["pattern"] = candidate.setting
    value = candidate.value if candidate.kind == "shrink" else None
    for name in method_entry(candidate.method).sections:  # each method's own section fits itself
        tree[name] = sections()[name].fit_candidate(tree[name], budget, value)
    return build_recipe(tree)


def units_of(recipe: Recipe, candidates: list[Candidate]) -> tuple[list[dict], list[dict]]:
    """(dense units, candidate units): one dense per seed; one unit per seed and candidate, SPP's ratios together."""
    out = Path(recipe.output_dir)
    dense_units, units = [], []
    spp = [c for c in candidates if c.kind == "spp"]
    others = [c for c in candidates if c.kind not in ("spp", "dense")]
    for seed in recipe.compare.seeds:
        seed_dir = out / f"seed{seed}"
        dense_units.append({"key": f"seed{seed}/dense", "seed": seed, "dir": str(seed_dir / "dense"),
                            "candidates": [DENSE.to_dict()], "recipe": candidate_recipe(
                                recipe, DENSE, seed, seed_dir / "dense", None).model_dump(mode="json")})
        for candidate in others + spp[:1]:
            group = spp if candidate.kind == "spp" else [candidate]
            directory = seed_dir / (SPP if candidate.kind == "spp" else candidate.slug)
            units.append({"key": f"seed{seed}/{directory.name}", "seed": seed, "dir": str(directory),
                          "candidates": [c.to_dict() for c in group], "dense_dir": str(seed_dir / "dense"),
                          "base": recipe.model_dump(mode="json")})
    return dense_units, units


def dense_model_dir(dense_run: Path) -> Path:
    """The seed's fine-tuned dense model: ``dense/`` (saved with its scores, so candidates need not rescore it)."""
    return dense_run / "dense" if (dense_run / "dense" / "config.json").is_file() else dense_run / "model"


def model_size(model_dir: Path) -> dict[str, Any]:
    """Stored parameters, the transformer layers' Linear weights and their nonzeros, and the file size of a saved
    model. The layers are counted on the loaded model (its family's layer stack): transformers 5 saves some
    families under their older parameter names, so the file's names do not say which tensors are layers."""
    from ..core.targets import layer_stack
    from ..models.saved import load_pruned_model

    file = model_dir / "model.safetensors"
    with safe_open(str(file), framework="pt") as weights:
        stored = sum(torch.Size(weights.get_slice(name).get_shape()).numel() for name in weights.keys())
    model = load_pruned_model(model_dir)[0]
    linears = [m.weight for m in layer_stack(model).modules() if isinstance(m, nn.Linear)]
    return {"stored_parameters": stored, "encoder_weights": sum(w.numel() for w in linears),
            "encoder_nonzero": sum(int(torch.count_nonzero(w)) for w in linears), "file_bytes": file.stat().st_size}


def run_unit(unit: dict[str, Any], threads: int | None = None,
             options: RunOptions = RunOptions(progress=False, log=silent_log)) -> list[dict[str, Any]]:
    """Train one unit (resuming its directory if it was started) and return one record per candidate.

    A top-level function, so ``--jobs`` can run it in another process; errors come back as records."""
    from ..runs.pipeline import run
    from ..runs.solution_path import PATH_FILE, SEARCH_SUMMARY, extract, search

    if threads:
        torch.set_num_threads(threads)
    directory = Path(unit["dir"])
    candidates = [Candidate(**{k: v for k, v in c.items() if k != "label"}) for c in unit["candidates"]]
    started = time.perf_counter()
    try:
        if "recipe" in unit:  # the seed's dense model
            recipe = build_recipe(unit["recipe"])
        else:
            recipe = candidate_recipe(build_recipe(unit["base"]), candidates[0], unit["seed"], directory,
                                      dense_model_dir(Path(unit["dense_dir"])))
        this_run = replace(options, resume=(directory / STATE_FILE).is_file())  # a started unit continues
        if candidates[0].kind != "spp":
            report = run(recipe, this_run)
            rows = [(candidates[0], report["pruned"], report["model_dir"], {"wall_s": time.perf_counter() - started})]
        else:
            if not (directory / "model" / PATH_FILE).is_file():
                search(recipe, this_run)
            cuts = extract(directory, [c.value for c in candidates], output_dir=directory,
                           options=replace(options, resume=True))
            search_wall = json.loads((directory / SEARCH_SUMMARY).read_text())["wall_time_s"]["total"]
            rows = [(c, row["scores"], row["model_dir"], {"wall_s": row["wall_time_s"], "search_wall_s": search_wall})
                    for c, row in zip(candidates, cuts)]
    except PruneformerError as exc:
        return [{"label": candidates[0].label, "seed": unit["seed"], "error": str(exc)}]
    return [{"label": c.label, "candidate": c.to_dict(), "seed": unit["seed"], "scores": scores, "model_dir": str(md),
             "size": model_size(Path(md)), **walls} for c, scores, md, walls in rows]


def execute(units: list[dict], jobs: int, threads: int, options: RunOptions,
            starting: Callable[[dict], None]) -> Iterator[tuple[dict, list[dict]]]:
    """Run units, ``jobs`` at a time (in-process when 1), yielding each with its records as it finishes;
    ``starting(unit)`` is told when a unit starts (or is queued for a worker)."""
    if jobs <= 1 or len(units) <= 1:
        for unit in units:
            starting(unit)
            yield unit, run_unit(unit, threads, options)
        return
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        pending = {}
        for unit in units:
            starting(unit)
            quiet = RunOptions(progress=False, log=silent_log, trust_pickle=options.trust_pickle)  # picklable
            pending[pool.submit(run_unit, unit, threads, quiet)] = unit
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield pending.pop(future), future.result()


class SessionWall:
    """This session's wall time, kept in the compare's state as it grows (``wall-open``, after every finished
    run), so a session that crashes or is stopped still counts: the next session folds its last recorded time
    into ``wall`` as one that ended early (``interrupted``), counted to its last finished run."""

    def __init__(self, state: RunState) -> None:
        self.state, self.t0 = state, time.perf_counter()
        wall = state.done("wall") or {"sessions_s": [], "training_s": []}
        unfinished = state.done("wall-open")
        if unfinished:
            wall = {**wall, "sessions_s": wall["sessions_s"] + [unfinished["session_s"]],
                    "training_s": wall["training_s"] + [unfinished["session_s"]],
                    "interrupted": wall.get("interrupted", 0) + 1}
            state.mark("wall", wall)
        self.previous = wall

    def tick(self) -> None:
        self.state.mark("wall-open", {"session_s": time.perf_counter() - self.t0})

    def close(self, training_s: float) -> dict[str, Any]:
        wall = {**self.previous, "sessions_s": self.previous["sessions_s"] + [time.perf_counter() - self.t0],
                "training_s": self.previous["training_s"] + [training_s]}
        self.state.mark("wall", wall)  # every session's wall time: a compare may span several
        self.state.mark("wall-open", {})
        return wall


def compare(recipe: Recipe, options: RunOptions | None = None, **settings: Any) -> dict[str, Any]:
    """Run the compare ``recipe.compare`` describes; returns the summary (also written as compare.json/.md,
    pareto.png in ``recipe.output_dir``). ``options`` or their fields as keywords
    (:class:`~pruneformer.runs.stages.RunOptions`); its ``callbacks(step, loss)`` see every training step of
    the runs trained in this process (``compare.jobs`` 1)."""
    from ..models.loading import load_classifier
    from .outputs import write_outputs
    from .report import measure_latency, summarise

    options = RunOptions.of(options, **settings)
    log, trust_pickle = options.log, options.trust_pickle
    quiet_library_progress()
    c = recipe.compare
    candidates = parse_candidates(c.candidates)
    state = open_compare(recipe, options.resume)
    clock = SessionWall(state)
    bundle = prepare_data(recipe.data, c.seeds[0])  # bad data fails here, before any training
    model, _ = load_classifier(recipe.dense.checkpoint or recipe.model, bundle.task.num_labels,
                               bundle.task.problem_type, bundle.task.label_names, trust_pickle=trust_pickle)
    check_candidates_fit(candidates, model, recipe)
    del model
    state.mark("plan", {"candidates": [x.to_dict() for x in candidates], "seeds": c.seeds})
    dense_units, units = units_of(recipe, candidates)
    total = len(dense_units) + len(units)
    finished = sum(1 for u in dense_units + units if state.done(u["key"]))
    log(f"compare: {len(candidates)} candidates x {len(c.seeds)} seed(s) = {total} runs ({finished} already done), "
        f"{c.jobs} at a time, in {recipe.output_dir}")
    for stage in (dense_units, units):  # every candidate of a seed starts from that seed's dense model
        todo = [u for u in stage if not state.done(u["key"])]
        if c.jobs > 1 and len(todo) > 1:
            log(f"running {len(todo)} runs, {c.jobs} at a time: {', '.join(u['key'] for u in todo)}")
        quiet = c.jobs > 1 and len(todo) > 1

        def starting(unit: dict, quiet: bool = quiet) -> None:
            if not quiet:
                log(f"[{finished + 1}/{total}] running {unit['key']}")

        for unit, records in execute(todo, c.jobs, c.threads, replace(options, progress=options.progress and c.jobs <= 1),
                                     starting):
            failed = [r for r in records if "error" in r]
            if failed:
                raise PruneformerError(f"{unit['key']} failed: {failed[0]['error']}",
                                       "fix the cause and rerun with --resume (finished runs are kept)")
            finished += 1
            state.mark(unit["key"], {"records": records})
            clock.tick()
            scores = "; ".join(f"{r['label']} dev {next(iter(r['scores']['dev'].values())):.4f}" for r in records)
            log(f"[{finished}/{total}] done {unit['key']}: {scores} ({sum(r['wall_s'] for r in records):.0f} s); "
                f"{total - finished} to go")
    records = [r for u in dense_units + units for r in state.done(u["key"])["records"]]
    train_wall = time.perf_counter() - clock.t0
    labels = sorted({r["label"] for r in records})
    timed = {"labels": labels, "settings": latency_settings(recipe)}

    def time_models() -> dict[str, Any]:
        log(f"timing {len(labels)} models side by side (batch {c.latency_batch}, length {c.latency_length}"
            f"{', PyTorch and ONNX Runtime fp32/int8' if c.onnx else ', PyTorch'})")
        return measure_latency(recipe, records, bundle, log, trust_pickle)

    latency = run_stage(state, Stage("latency", time_models, lambda measured: measured | timed, lambda done: done,
                                     reuse=lambda done: all(done.get(k) == v for k, v in timed.items())))
    wall = clock.close(train_wall)
    summary = summarise(recipe, records, latency, candidates, wall)
    write_outputs(summary, Path(recipe.output_dir))
    log(summary["recommendation"]["line"])
    log(f"compare written to {Path(recipe.output_dir) / 'compare.md'}")
    return summary


def latency_settings(recipe: Recipe) -> dict[str, Any]:
    c = recipe.compare
    return {"batch": c.latency_batch, "length": c.latency_length, "threads": c.latency_threads, "rounds": c.rounds,
            "onnx": c.onnx, "int8_scored": "every seed"}

