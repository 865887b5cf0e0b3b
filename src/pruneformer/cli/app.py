"""The Typer application, its one-line error handling, and the options several commands share."""

from __future__ import annotations

import sys
from typing import Any

import typer
from rich.console import Console
from rich.text import Text

from ..errors import PruneformerError

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
