"""The validated configuration of a pruning run: the one place defaults live.

A recipe comes from YAML, from command-line flags, or both (flags override the file). Validation errors
become one line naming the field and what it accepts, e.g.
``Recipe field 'admm.rho': Input should be greater than 0. Fix: ...``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import PatternError, RecipeError
from .patterns import parse_pattern

#: The pruning schedules a recipe can name. Each retraining schedule spends ``prune.epochs`` in total.
METHOD_SCHEDULES = ("dense", "magnitude", "magnitude-retrain", "srste", "admm", "admm-srste")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    """Where the examples come from and how they are cut."""

    source: str = Field("embedded", description="'embedded' (movie-review sentiment), a local file, or 'glue'")
    glue_task: str | None = Field(None, description="GLUE task name when source is a GLUE directory")
    dev_file: str | None = None
    test_file: str | None = None
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    task_type: Literal["auto", "classification", "regression"] = "auto"
    max_length: int = Field(64, ge=8, le=4096)
    max_train: int | None = Field(None, ge=1, description="subsample the training split (presets)")
    max_eval: int | None = Field(None, ge=1, description="subsample dev/test")


class TrainConfig(_Strict):
    """Optimisation settings shared by every phase."""

    batch_size: int = Field(32, ge=1)
    eval_batch_size: int = Field(128, ge=1)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    max_grad_norm: float | None = Field(1.0, gt=0)
    log_every: int = Field(10, ge=1)
    checkpoint_every: int = Field(100, ge=1, description="optimizer steps between resumable checkpoints")
    group_by_length: bool = Field(True, description="batch sentences of similar length (less padding, faster)")


class DenseConfig(_Strict):
    """The dense fine-tune that gives the baseline, the teacher and the starting point of pruning."""

    epochs: float = Field(1.0, ge=0)
    lr: float = Field(5e-5, gt=0, lt=1)
    checkpoint: str | None = Field(None, description="reuse an already fine-tuned dense model directory")


class PruneConfig(_Strict):
    """The pruning schedule after the dense fine-tune."""

    method: Literal["dense", "magnitude", "magnitude-retrain", "srste", "admm", "admm-srste"] = "admm"
    pattern: str = "2:4"
    epochs: float = Field(2.0, ge=0, description="total epochs of the retraining phases")
    lr: float = Field(5e-5, gt=0, lt=1)
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)

    @field_validator("pattern")
    @classmethod
    def _valid_pattern(cls, value: str) -> str:
        try:
            return parse_pattern(value).spec
        except PatternError as exc:
            raise ValueError(str(exc)) from exc


class ADMMConfig(_Strict):
    """ADMM's split: how long, how often Z and U move, and how hard W is pulled towards Z."""

    epochs: float | None = Field(None, ge=0, description="ADMM epochs (default: half of prune.epochs)")
    interval: int = Field(30, ge=1, description="optimizer steps between Z/U updates")
    rho: float = Field(1e-3, gt=0)
    rho_schedule: Literal["constant", "geometric"] = "geometric"
    rho_factor: float = Field(1.3, ge=1)
    rho_max: float = Field(0.1, gt=0)
    penalty: Literal["gradient", "decoupled"] = Field(
        "gradient", description="gradient: rho*(W-Z+U) added to W.grad; decoupled: proximal step after the optimizer")


class SRSTEConfig(_Strict):
    lambda_w: float = Field(2e-4, ge=0, description="decay on pruned weights")


class DistillConfig(_Strict):
    """Knowledge distillation from the dense fine-tuned model during the pruning phases."""

    enabled: bool = False
    temperature: float = Field(2.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the teacher term against the task loss")
    hidden_weight: float = Field(0.0, ge=0, description="weight of the hidden-state MSE")


class Recipe(_Strict):
    """Everything a ``pruneformer prune`` run needs."""

    model: str = Field("embedded", description="'embedded' (MiniLM-L6) or a local model directory")
    output_dir: str = "runs/minilm-2x4"
    seed: int = Field(0, ge=0)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    dense: DenseConfig = Field(default_factory=DenseConfig)
    prune: PruneConfig = Field(default_factory=PruneConfig)
    admm: ADMMConfig = Field(default_factory=ADMMConfig)
    srste: SRSTEConfig = Field(default_factory=SRSTEConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)

    @model_validator(mode="after")
    def _admm_fits(self) -> "Recipe":
        if self.prune.method in ("admm", "admm-srste") and self.admm.epochs is not None \
                and self.admm.epochs > self.prune.epochs:
            raise ValueError(
                f"admm.epochs ({self.admm.epochs}) exceeds prune.epochs ({self.prune.epochs}), the total budget"
            )
        return self

    def admm_epochs(self) -> float:
        return self.prune.epochs / 2 if self.admm.epochs is None else self.admm.epochs


def _one_line(exc: ValidationError) -> RecipeError:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "recipe"
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return RecipeError(f"Recipe field '{field}' is not a known option.",
                           "check the spelling against `pruneformer prune --help` or the README's recipe")
    problem = f"Recipe field '{field}': {message.rstrip('.')}."
    if "Fix:" in message:  # the validator already said how to fix it
        return RecipeError(problem.rstrip("."))
    return RecipeError(problem, "correct that value in the YAML or on the command line")


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def build_recipe(data: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None) -> Recipe:
    """Validate a recipe dictionary (with flag overrides merged in) into a :class:`Recipe`."""
    try:
        return Recipe.model_validate(_deep_merge(data or {}, overrides or {}))
    except ValidationError as exc:
        raise _one_line(exc) from None


def load_recipe(path: str | Path | None, overrides: dict[str, Any] | None = None) -> Recipe:
    """Read a YAML recipe (optional) and apply flag overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise RecipeError(f"Recipe file '{path}' does not exist.", "check the path given to --recipe")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            line = getattr(getattr(exc, "problem_mark", None), "line", None)
            where = f" at line {line + 1}" if line is not None else ""
            raise RecipeError(f"Recipe file '{path}' is not valid YAML{where}.", "fix the YAML syntax") from None
        if not isinstance(data, dict):
            raise RecipeError(f"Recipe file '{path}' must hold a mapping of fields.", "see the README's example recipe")
    return build_recipe(data, overrides)


def recipe_to_yaml(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
