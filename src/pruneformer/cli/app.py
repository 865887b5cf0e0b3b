"""The Typer application, its one-line error handling, and the options several commands share."""

from __future__ import annotations

import inspect
import sys
import types
import typing
from typing import Any, Callable, Optional

import typer
from rich.console import Console
from rich.text import Text

from ..errors import PruneformerError
from ..methods.registry import on_sections_changed, sections
from ..runs.stages import RunOptions

console = Console()
err_console = Console(stderr=True)


def print_error(message: str) -> None:
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
            print_error(f"{exc.format_message()} Fix: see `{where} --help` for the accepted options and values")
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
#: The model and data options of the commands that train (``prune``, ``compare``): name -> option. They are
#: declared once, here, and added to each command's signature by :func:`with_data_options`.
DATA_OPTIONS: dict[str, Any] = {
    "model": typer.Option(None, help="'embedded' (MiniLM-L6, default) or a local model directory."),
    "data": typer.Option(None, help="'embedded' (movie sentiment, default), a CSV/TSV/JSONL/Parquet file, or a GLUE directory."),
    "glue_task": typer.Option(None, help="GLUE task when --data is a GLUE directory (e.g. sst2, cola)."),
    "dev_file": typer.Option(None, help="Dev split file for local data (default: 10% of train)."),
    "test_file": typer.Option(None, help="Test split file for local data."),
    "text_column": typer.Option(None, help="Text column of local data (default 'text')."),
    "text_pair_column": typer.Option(None, help="Second text column for pair tasks."),
    "label_column": typer.Option(None, help="Label column (default 'label')."),
    "max_length": MAX_LENGTH, "max_train": MAX_TRAIN, "max_eval": MAX_EVAL,
}
_DATA_TYPES = {"max_length": "Optional[int]", "max_train": "Optional[int]", "max_eval": "Optional[int]"}


def with_data_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give ``command`` the model and data options after its ``recipe`` parameter; they reach it as keyword
    arguments (its ``**data``). Typer reads the signature, so each command need not spell them out."""
    signature = inspect.signature(command)
    params = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    at = [p.name for p in params].index("recipe") + 1
    shared = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                annotation=Optional[int] if name in _DATA_TYPES else Optional[str])
              for name, option in DATA_OPTIONS.items()]
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params]
    command.__signature__ = signature.replace(parameters=params[:at] + shared + params[at:])  # type: ignore[attr-defined]
    command.__annotations__ = {**command.__annotations__,
                               **{name: _DATA_TYPES.get(name, "Optional[str]") for name in DATA_OPTIONS}}
    return command


def _flag_type(annotation: Any) -> type:
    """The option type of a section field: its type without Optional; a Literal's choices are text."""
    args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    return annotation if annotation in (bool, int, float) else str


def _flag_help(section: str, field: str, info: Any) -> str:
    text = f"{section}.{field}: {info.description or field}"
    choices = typing.get_args(info.annotation) if typing.get_origin(info.annotation) is typing.Literal else ()
    if choices:
        text += f" ({' | '.join(map(str, choices))})"
    if info.default is not None and "default" not in text:
        text += f" (default {info.default})"
    return text + "."


def section_flags() -> dict[str, tuple[str, str]]:
    """``prune``'s method flags, by parameter name: (section, field), from every registered section."""
    return {flag.replace("-", "_"): (name, field) for name, settings in sections().items()
            for flag, field in settings.flags.items()}


def with_section_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give ``command`` a flag for every field a registered method section offers (``Settings.flags``);
    they reach it as keyword arguments (its ``**`` parameter). Rebuilt whenever a section is registered,
    so a plugin's flags appear on ``pruneformer prune`` without an edit here."""
    base = inspect.signature(command)

    def rebuild() -> None:
        params = [p for p in base.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        added, kinds = [], {}
        for name, settings in sections().items():
            for flag, field in settings.flags.items():
                info, kind = settings.model_fields[field], _flag_type(settings.model_fields[field].annotation)
                declared = f"--{flag}/--no-{flag}" if kind is bool else f"--{flag}"
                kinds[flag.replace("-", "_")] = Optional[kind]
                added.append(inspect.Parameter(flag.replace("-", "_"), inspect.Parameter.KEYWORD_ONLY,
                                               default=typer.Option(None, declared, help=_flag_help(name, field, info)),
                                               annotation=Optional[kind]))
        at = next((i for i, p in enumerate(params) if p.name == "seed"), len(params))
        command.__signature__ = base.replace(parameters=params[:at] + added + params[at:])  # type: ignore[attr-defined]
        command.__annotations__ = {**command.__annotations__, **kinds}

    rebuild()
    on_sections_changed(rebuild)
    return command


BATCH_SIZE = typer.Option(None, help="Training batch size (default 32).")
CHECKPOINT_EVERY = typer.Option(None, help="Steps between resumable checkpoints (default 100).")


def run_options(resume: bool, quiet: bool, trust_pickle: bool) -> RunOptions:
    """How every command drives its run, from its flags: bars unless --quiet, log lines to the console."""
    return RunOptions(resume=resume, progress=not quiet, log=lambda line: console.print(line, highlight=False),
                      trust_pickle=trust_pickle)


def fail(exc: PruneformerError) -> None:
    print_error(str(exc))
    raise typer.Exit(2)


def parse_option(flag: str, parse: Any, value: Any) -> Any:
    """``parse(value)``, with the flag named in the one-line error when the value is refused."""
    try:
        return parse(value)
    except PruneformerError as exc:
        raise type(exc)(f"{flag}: {exc.problem}", exc.fix) from None


def recipe_overrides(**flags: Any) -> dict[str, Any]:
    """Map flat CLI flags onto the nested recipe, skipping the ones not given: the core sections' here, the
    method sections' from their own ``Settings.flags``."""
    where = {
        "model": ("model",), "output_dir": ("output_dir",), "seed": ("seed",),
        "data": ("data", "source"), "glue_task": ("data", "glue_task"), "dev_file": ("data", "dev_file"),
        "test_file": ("data", "test_file"), "text_column": ("data", "text_column"),
        "text_pair_column": ("data", "text_pair_column"), "label_column": ("data", "label_column"),
        "max_length": ("data", "max_length"), "max_train": ("data", "max_train"), "max_eval": ("data", "max_eval"),
        "method": ("prune", "method"), "pattern": ("prune", "pattern"), "epochs": ("prune", "epochs"),
        "lr": ("prune", "lr"), "include": ("prune", "include"), "exclude": ("prune", "exclude"),
        "dense_epochs": ("dense", "epochs"), "dense_lr": ("dense", "lr"), "dense_checkpoint": ("dense", "checkpoint"),
        "distill": ("distill", "enabled"),
        "distill_hidden": ("distill", "hidden_weight"), "qat_epochs": ("qat", "epochs"),
        "batch_size": ("train", "batch_size"), "checkpoint_every": ("train", "checkpoint_every"),
        "candidates": ("compare", "candidates"), "seeds": ("compare", "seeds"), "max_drop": ("compare", "max_drop"),
        "jobs": ("compare", "jobs"), "threads": ("compare", "threads"), "latency_batch": ("compare", "latency_batch"),
        "latency_length": ("compare", "latency_length"), "latency_threads": ("compare", "latency_threads"),
        "rounds": ("compare", "rounds"), "onnx": ("compare", "onnx"),
    } | section_flags()
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
