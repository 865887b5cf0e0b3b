"""The commands on saved and exported models: ``eval``, ``export``, ``inspect``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from ..errors import PruneformerError
from .app import TRUST_PICKLE, app, console, fail, parse_option


def _tokenized_split(tokenizer: Any, split: str, seed: int, config: Any) -> tuple[Any, list[str]]:
    """(tokenized ``split``, the task's metrics) of the data a :class:`DataConfig` names, for scoring a model."""
    from ..data import tokenize_bundle
    from ..runs.engine import prepare_data

    bundle = tokenize_bundle(prepare_data(config, seed), tokenizer, config.max_length)
    dataset = getattr(bundle, split, None)
    if dataset is None:
        raise PruneformerError(f"The data has no '{split}' split.", "use --split dev (or test where it exists)")
    return dataset, bundle.task.metrics


@app.command("eval")
def eval_cmd(
    model_dir: str = typer.Argument(..., help="A saved (pruned or dense) model directory, or an exported one "
                                    "(`pruneformer export`: its model.onnx, or a .onnx file, runs in ONNX Runtime)."),
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
    """Score a saved or exported model on a data split."""
    from transformers import DataCollatorWithPadding

    from ..deploy.runtime import load_for_scoring
    from ..runs.engine import quiet_library_progress
    from ..runs.recipe import DataConfig, validate_config
    from ..train.evaluation import evaluate

    quiet_library_progress()
    try:
        if split not in ("dev", "test"):
            raise PruneformerError(f"--split must be dev or test, not '{split}'.", "use --split dev or --split test")
        config = validate_config(DataConfig, dict(
            source=data, glue_task=glue_task, dev_file=dev_file, test_file=test_file, text_column=text_column,
            text_pair_column=text_pair_column, label_column=label_column, max_length=max_length))
        net, tokenizer, _ = load_for_scoring(model_dir, trust_pickle=trust_pickle)
        dataset, metrics = _tokenized_split(tokenizer, split, seed, config)
        scores = evaluate(net, dataset, DataCollatorWithPadding(tokenizer), metrics)
    except PruneformerError as exc:
        fail(exc)
    console.print_json(json.dumps({"model": model_dir, "split": split, **scores}))


@app.command("export")
def export_cmd(
    model_dir: str = typer.Argument(..., help="A model directory pruneformer (or transformers) saved."),
    output_dir: str = typer.Option(..., "--output-dir", "-o", help="Where model.onnx, the tokenizer and export.json go."),
    fmt: str = typer.Option("onnx", "--format", help="onnx (the only format)."),
    quantize: Optional[str] = typer.Option(None, help="int8: ONNX Runtime's transformer fusions, then dynamic int8 "
                                           "(model.int8.onnx), with dev accuracy before and after."),
    keep_fp32: Optional[list[str]] = typer.Option(None, help="With --quantize: Linears kept in fp32, by role (query, key, "
                                                  "value, attn_out, ffn_in, ffn_out), 'classifier', 'pooler' or regex; "
                                                  "repeatable (default: classifier; 'none': none)."),
    tolerance: float = typer.Option(1e-4, help="Largest max-abs difference of logits allowed between ONNX Runtime "
                                    "and PyTorch."),
    per_channel: bool = typer.Option(True, "--per-channel/--per-tensor", help="With --quantize: one int8 scale per "
                                     "output column of each weight (default; same speed, less accuracy lost), or one "
                                     "per matrix"),
    reduce_range: bool = typer.Option(False, "--reduce-range/--full-range", help="With --quantize: int8 weights in "
                                      "[-64, 64], which every CPU multiplies exactly; full range (default) is exact "
                                      "on VNNI / AMX CPUs, clipped on AVX2-only ones"),
    recipe: Optional[Path] = typer.Option(None, "--recipe", "-r", help="With --quantize: the recipe whose data (and "
                                          "seed) give the dev split scored before and after (default: the recipe.yaml "
                                          "of the run that saved MODEL_DIR, else the embedded data)."),
    trust_pickle: bool = TRUST_PICKLE,
) -> None:
    """Export a saved model to ONNX (dynamic batch and sequence), checked against PyTorch; optionally int8."""
    from ..deploy.export import FORMATS, QUANTIZATIONS, check_choice, export_model
    from ..runs.engine import quiet_library_progress
    from ..runs.recipe import load_recipe

    quiet_library_progress()
    try:
        check_choice(fmt, FORMATS, "--format")  # before any loading
        check_choice(quantize, QUANTIZATIONS, "--quantize")
        if not tolerance > 0:
            raise PruneformerError(f"--tolerance {tolerance} is not a positive number.", "use e.g. --tolerance 1e-4")
        beside = Path(model_dir).parent / "recipe.yaml"  # a run writes recipe.yaml beside its model/ (and ratio-*/)
        built = load_recipe(recipe or (beside if beside.is_file() else None))

        def dev_split(tokenizer: Any) -> tuple[Any, list[str]]:
            return _tokenized_split(tokenizer, "dev", built.seed, built.data)

        export_model(model_dir, output_dir, fmt=fmt, quantize=quantize, keep_fp32=keep_fp32 or ["classifier"],
                     tolerance=tolerance, dev=dev_split if quantize else None, trust_pickle=trust_pickle,
                     per_channel=per_channel, reduce_range=reduce_range,
                     log=lambda line: console.print(line, highlight=False, soft_wrap=True))
    except PruneformerError as exc:
        fail(exc)


@app.command()
def inspect(
    model_dir: str = typer.Argument(..., help="A saved model directory, or an exported one (model.onnx, or a .onnx file)."),
    pattern: Optional[str] = typer.Option(None, help="Pattern to check (default: the one recorded in the model)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    trust_pickle: bool = TRUST_PICKLE,
) -> None:
    """Per-layer sparsity, and whether every targeted layer satisfies its pattern (exit 1 if not)."""
    from ..core.patterns import parse_pattern
    from ..deploy.runtime import exported_weights, is_exported
    from ..models.saved import load_pruned_model
    from ..runs.engine import quiet_library_progress

    quiet_library_progress()
    from ..core.sparsity import overall_sparsity, weight_sparsity
    from ..core.targets import resolve_targets

    try:
        asked = parse_option("--pattern", parse_pattern, pattern) if pattern else None  # fails before any loading
        if is_exported(model_dir):  # what the deployed file holds (int8 weights for model.int8.onnx)
            weights, info = exported_weights(model_dir)
        else:
            net, _, info = load_pruned_model(model_dir, trust_pickle=trust_pickle)
            weights = [(t.name, t.role, t.linear_weight) for t in resolve_targets(net)]
        spec = pattern or (info or {}).get("pattern")
        parsed = asked or (parse_pattern(spec) if spec else None)
        recorded = set((info or {}).get("targets") or [name for name, _, _ in weights])
        rows = weight_sparsity([w for w in weights if w[0] in recorded], parsed)
    except PruneformerError as exc:
        fail(exc)
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
