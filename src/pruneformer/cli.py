"""The ``pruneformer`` command: ``prune``, ``eval`` and ``inspect``, thin over the Python API.

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

from .errors import PruneformerError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Prune pretrained transformers to N:M / block / unstructured sparsity (ADMM, SR-STE, baselines).")
console = Console()
err_console = Console(stderr=True)


def _fail(exc: PruneformerError) -> None:
    err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


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
        "batch_size": ("train", "batch_size"), "checkpoint_every": ("train", "checkpoint_every"),
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
    max_length: Optional[int] = typer.Option(None, help="Max tokens per example (default 64)."),
    max_train: Optional[int] = typer.Option(None, help="Use at most this many training examples."),
    max_eval: Optional[int] = typer.Option(None, help="Use at most this many dev/test examples."),
    method: Optional[str] = typer.Option(None, help="dense | magnitude | magnitude-retrain | srste | admm | admm-srste (default admm)."),
    pattern: Optional[str] = typer.Option(None, help="2:4, 1:4, 4:8 (N:M along inputs), 4x4:8 (blocks), 50% or 50%:global."),
    epochs: Optional[float] = typer.Option(None, help="Total epochs of the pruning phases (default 2)."),
    lr: Optional[float] = typer.Option(None, help="Learning rate of the pruning phases (default 5e-5)."),
    include: Optional[list[str]] = typer.Option(None, help="Prune only layers matching this role (query, key, value, attn_out, ffn_in, ffn_out) or regex; repeatable."),
    exclude: Optional[list[str]] = typer.Option(None, help="Skip layers matching this role or regex; repeatable."),
    dense_epochs: Optional[float] = typer.Option(None, help="Epochs of the dense fine-tune (default 1)."),
    dense_lr: Optional[float] = typer.Option(None, help="Learning rate of the dense fine-tune."),
    dense_checkpoint: Optional[str] = typer.Option(None, help="Reuse a dense fine-tuned model directory instead of fine-tuning."),
    admm_epochs: Optional[float] = typer.Option(None, help="Epochs of ADMM inside the budget (default: half)."),
    admm_interval: Optional[int] = typer.Option(None, help="Optimizer steps between ADMM Z/U updates (default 30)."),
    rho: Optional[float] = typer.Option(None, help="Initial ADMM penalty rho (default 1e-3)."),
    rho_schedule: Optional[str] = typer.Option(None, help="constant | geometric (default geometric)."),
    rho_factor: Optional[float] = typer.Option(None, help="Geometric rho growth per update (default 1.3)."),
    rho_max: Optional[float] = typer.Option(None, help="Cap on rho (default 0.1)."),
    admm_penalty: Optional[str] = typer.Option(None, help="gradient (rho*(W-Z+U) through the optimizer, default) | decoupled (proximal step after it)."),
    lambda_w: Optional[float] = typer.Option(None, help="SR-STE decay of pruned weights (default 2e-4)."),
    distill: Optional[bool] = typer.Option(None, "--distill/--no-distill", help="Distil from the dense model."),
    batch_size: Optional[int] = typer.Option(None, help="Training batch size (default 32)."),
    checkpoint_every: Optional[int] = typer.Option(None, help="Steps between resumable checkpoints (default 100)."),
    seed: Optional[int] = typer.Option(None, help="Random seed (default 0)."),
    output_dir: Optional[str] = typer.Option(None, "--output-dir", "-o", help="Where the model and report go."),
    resume: bool = typer.Option(False, help="Continue an interrupted run in --output-dir."),
    quiet: bool = typer.Option(False, help="No progress bars."),
) -> None:
    """Fine-tune dense, prune to a pattern, retrain, and save the model with a report."""
    from .pipeline import run
    from .recipe import load_recipe

    flags = {k: v for k, v in locals().items() if k not in ("recipe", "resume", "quiet", "run", "load_recipe")}
    try:
        built = load_recipe(recipe, _overrides(**flags))
        run(built, resume=resume, progress=not quiet, log=lambda line: console.print(line, highlight=False))
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
) -> None:
    """Score a saved model on a data split."""
    from transformers import DataCollatorWithPadding

    from .data import tokenize_bundle
    from .evaluation import evaluate
    from .io import load_pruned_model
    from .pipeline import prepare_data, quiet_library_progress
    from .recipe import DataConfig

    quiet_library_progress()
    try:
        net, tokenizer, _ = load_pruned_model(model_dir)
        config = DataConfig(source=data, glue_task=glue_task, dev_file=dev_file, test_file=test_file, text_column=text_column,
                            text_pair_column=text_pair_column, label_column=label_column, max_length=max_length)
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
) -> None:
    """Per-layer sparsity, and whether every targeted layer satisfies its pattern (exit 1 if not)."""
    from .io import load_pruned_model
    from .patterns import parse_pattern
    from .pipeline import quiet_library_progress

    quiet_library_progress()
    from .sparsity import layer_sparsity, overall_sparsity
    from .targets import resolve_targets

    try:
        net, _, info = load_pruned_model(model_dir)
        spec = pattern or (info or {}).get("pattern")
        parsed = parse_pattern(spec) if spec else None
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


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
