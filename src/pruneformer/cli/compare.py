"""``pruneformer compare``: every candidate on the same model, data, seeds and budget, and which one to use."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from ..errors import PruneformerError, RecipeError
from .app import (
    BATCH_SIZE,
    CHECKPOINT_EVERY,
    DENSE_LR,
    QUIET,
    RESUME,
    TRUST_PICKLE,
    app,
    fail,
    recipe_overrides,
    run_options,
    with_data_options,
)


def parse_seeds(text: Optional[str]) -> Optional[list[int]]:
    """``"0,1"`` or ``"0 1"`` -> [0, 1]; one-line error naming --seeds otherwise (the recipe's
    ``compare.seeds`` checks the values: at least one, each >= 0, each once)."""
    if text is None:
        return None
    try:
        return [int(part) for part in text.replace(",", " ").split()]
    except ValueError:
        raise RecipeError(f"--seeds '{text}' is not a list of whole numbers.", "write e.g. --seeds 0,1") from None


@app.command("compare")
@with_data_options
def compare_cmd(
    candidates: Optional[list[str]] = typer.Argument(None, help="METHOD:PATTERN (admm:2:4, srste:1:4), METHOD:FRACTION "
                                                     "of encoder weights kept (mlpruning:0.5, l1-structured:0.3) or "
                                                     "spp:RATIO[,RATIO...] removed (default: the recipe's compare.candidates)."),
    candidate_list: Optional[list[str]] = typer.Option(None, "--candidates", help="Candidates as one quoted, "
                                                       "space-separated list (repeatable); same forms as CANDIDATES."),
    recipe: Optional[Path] = typer.Option(None, "--recipe", "-r", help="YAML recipe (its compare: section too); flags override it."),
    epochs: Optional[float] = typer.Option(None, help="The pruning budget of every candidate, in epochs (default 2)."),
    lr: Optional[float] = typer.Option(None, help="Learning rate of the pruning phases (default 5e-5)."),
    dense_epochs: Optional[float] = typer.Option(None, help="Epochs of the dense fine-tune, once per seed (default 1)."),
    dense_lr: Optional[float] = DENSE_LR,
    batch_size: Optional[int] = BATCH_SIZE,
    checkpoint_every: Optional[int] = CHECKPOINT_EVERY,
    seeds: Optional[str] = typer.Option(None, help="Seeds, e.g. 0,1: one dense model each (default 0)."),
    max_drop: Optional[float] = typer.Option(None, help="Accuracy points the recommendation may lose against dense (default 1)."),
    jobs: Optional[int] = typer.Option(None, help="Runs trained side by side, one process each (default 1)."),
    threads: Optional[int] = typer.Option(None, help="Torch threads per training process (default 1)."),
    latency_batch: Optional[int] = typer.Option(None, help="Batch size of the latency measurement (default 32)."),
    latency_length: Optional[int] = typer.Option(None, help="Sequence length of the latency measurement (default 128)."),
    latency_threads: Optional[int] = typer.Option(None, help="Threads while timing (default: all cores)."),
    rounds: Optional[int] = typer.Option(None, help="Interleaved timing rounds; the fastest counts (default 10)."),
    onnx: Optional[bool] = typer.Option(None, "--onnx/--no-onnx", help="Also export each candidate to ONNX Runtime "
                                        "fp32 and int8 and time those (default on)."),
    output_dir: Optional[str] = typer.Option(None, "--output-dir", "-o", help="Where the runs, compare.md and pareto.png go."),
    resume: bool = RESUME,
    trust_pickle: bool = TRUST_PICKLE,
    quiet: bool = QUIET,
    **model_and_data: Any,
) -> None:
    """Which pruning should I use? Train every candidate on the same data and seeds, measure accuracy, size and
    latency, and recommend the fastest and the smallest within --max-drop."""
    from ..compare.flow import compare
    from ..runs.recipe import load_recipe

    try:
        words = [*(candidates or []), *(candidate_list or [])]
        overrides = recipe_overrides(
            **model_and_data, epochs=epochs, lr=lr,
            dense_epochs=dense_epochs, dense_lr=dense_lr, batch_size=batch_size, checkpoint_every=checkpoint_every,
            candidates=words or None,
            seeds=parse_seeds(seeds), max_drop=max_drop, jobs=jobs, threads=threads, latency_batch=latency_batch,
            latency_length=latency_length, latency_threads=latency_threads, rounds=rounds, onnx=onnx,
            output_dir=output_dir)
        if output_dir is None and recipe is None:
            overrides["output_dir"] = "runs/compare"
        built = load_recipe(recipe, overrides)
        compare(built, run_options(resume, quiet, trust_pickle))
    except PruneformerError as exc:
        fail(exc)
