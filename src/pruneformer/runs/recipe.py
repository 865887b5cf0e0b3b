"""The validated configuration of a pruning run: the one place defaults live.

A recipe comes from YAML, from command-line flags, or both (flags override the file). Validation errors
become one line naming the field and what it accepts, e.g.
``Recipe field 'admm.rho': Input should be greater than 0. Fix: ...``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..core.patterns import parse_pattern
from ..errors import PatternError, RecipeError
from ..methods.admm import resolve_rho
from ..methods.candidates import parse_candidates
from ..methods.registry import method_names, oneshot_names


def _registered(value: str, names: tuple[str, ...]) -> str:
    """The method names come from the registry (``methods/registry.py``), so a registered method is accepted
    here without editing this module; the message reads like pydantic's own for a fixed choice."""
    if value not in names:
        choices = ", ".join(f"'{n}'" for n in names[:-1]) + f" or '{names[-1]}'"
        raise ValueError(f"Input should be {choices}")
    return value


def _pattern_spec(value: str) -> str:
    try:
        return parse_pattern(value).spec
    except PatternError as exc:
        raise ValueError(str(exc)) from exc


def _layer_regexes(values: list[str]) -> list[str]:
    """Each entry is a role or a regex on layer names: check it compiles now, not after loading the model."""
    for value in values:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"'{value}' is not a role or a valid regular expression ({exc})") from None
    return values


#: a pattern spec, normalised ("2:4", "4x4:8", "70%"); a list of roles or layer-name regexes
PatternSpec = Annotated[str, AfterValidator(_pattern_spec)]
LayerRegexes = Annotated[list[str], AfterValidator(_layer_regexes)]


class _Strict(BaseModel):
    # inf and NaN are never meaningful settings (an infinite epoch count would only fail deep in the run)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        """A NUL character is in no real path, column or pattern; the OS would reject it deep in the run."""
        texts = value if isinstance(value, list) else [value]
        if any(isinstance(text, str) and "\x00" in text for text in texts):
            raise ValueError("contains a NUL character")
        return value


_Model = TypeVar("_Model", bound=BaseModel)


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

    method: str = Field("srste", description="a registered method name (pruneformer.methods.registry.method_names())")
    pattern: PatternSpec = "2:4"
    epochs: float = Field(2.0, ge=0, description="total epochs of the retraining phases")
    lr: float = Field(5e-5, gt=0, lt=1)
    include: LayerRegexes = Field(default_factory=list)
    exclude: LayerRegexes = Field(default_factory=list)

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        return _registered(value, method_names())



class ADMMConfig(_Strict):
    """ADMM's split: how long, how often Z and U move, and how hard W is pulled towards Z."""

    epochs: float | None = Field(None, ge=0, description="ADMM epochs (default: half of prune.epochs)")
    interval: int = Field(30, ge=1, description="optimizer steps between Z/U updates")
    pull: Literal["fixed", "lr"] = Field("fixed", description="fixed: the W-step closes rho/(1+rho) of the gap to "
                                         "Z - U per step; lr: the proximal step at the step's lr (rho in 1/lr units)")
    score: Literal["magnitude", "fisher"] = Field("magnitude", description="what Z keeps: |W+U|, or |W+U| x sqrt(mean g^2)")
    rho: float | None = Field(None, gt=0, description="starting penalty weight (default 0.02 with pull fixed, 30 with lr)")
    rho_schedule: Literal["constant", "geometric", "balanced"] = Field(
        "geometric", description="geometric: x rho_factor per Z/U update; balanced: residual balancing (Boyd 3.4.1)")
    rho_factor: float | None = Field(None, ge=1, description="rho growth per update; default: the factor that "
                                     "takes rho to rho_max at 60% of the ADMM phase's updates")
    rho_max: float | None = Field(None, gt=0, description="cap on rho (default 0.3 with pull fixed, 3000 with lr)")
    penalty: Literal["gradient", "decoupled"] = Field(
        "decoupled", description="decoupled: proximal step after the optimizer (Adam-proof); gradient: "
        "rho*(W-Z+U) added to W.grad after clipping (pull fixed only)")
    target_residual: float = Field(0.05, gt=0, description="primal residual ||W-Z||/||W|| ADMM must reach before "
                                   "the hard prune; above it the run warns")
    eval_every: int = Field(3, ge=0, description="score Proj(W) on dev every this many Z/U updates (0: epoch ends only)")

    @model_validator(mode="after")
    def _pull_fits(self) -> "ADMMConfig":
        resolve_rho(self.pull, self.penalty, self.rho, self.rho_max)
        return self


class SRSTEConfig(_Strict):
    """SR-STE: forward through the per-step projection, decay the pruned weights."""

    decay: Literal["decoupled", "gradient"] = Field(
        "decoupled", description="decoupled: pruned weights shrink by 1/(1+decay_rate) per step (Adam-proof); "
        "gradient: the paper's lambda_w (1-M) W added to the gradient (an SGD setting)")
    decay_rate: float = Field(2e-3, ge=0, lt=1, description="per-step shrink of pruned weights (decay: decoupled)")
    lambda_w: float = Field(2e-4, ge=0, description="gradient decay on pruned weights (decay: gradient)")


class DistillConfig(_Strict):
    """Knowledge distillation from the dense fine-tuned model during the retraining phases."""

    enabled: bool = False
    temperature: float = Field(2.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the teacher term against the task loss")
    hidden_weight: float = Field(0.0, ge=0, description="weight of the hidden-state MSE")
    during_admm: bool = Field(False, description="also distil during ADMM (its student starts equal to the teacher, "
                              "so the term mostly fights the penalty)")


class CalibrationConfig(_Strict):
    """Calibrated one-shot methods on a task (alps, sparsegpt, wanda, their -retrain recipes)."""

    samples: int = Field(512, ge=1, description="training sentences (a seeded sample) calibrating the prune")
    batch_size: int = Field(16, ge=1, description="sentences per batch (padding never enters a statistic)")
    dampening: float = Field(0.01, ge=0, description="ridge on each Gram matrix, a fraction of its mean diagonal")
    alps_rho: float = Field(0.1, gt=0, description="ALPS: starting ADMM penalty (unit-diagonal Gram)")
    alps_max_iter: int = Field(300, ge=1, description="ALPS: most ADMM iterations per layer")


class SPPConfig(_Strict):
    """SPP's search (one linearized Bregman path over paired-dimension masks) and its extractions."""

    epochs: float = Field(1.0, gt=0, description="epochs of the search")
    kappa: float = Field(1.0, gt=0)
    nu: float = Field(1000.0, gt=0, description="coupling: ||a - gamma||^2 / (2 nu); DessiLBI uses 100, see README")
    lam: float = Field(1.0, ge=0, description="lambda, the threshold of shrink(z, lambda)")
    alpha: float = Field(25.0, gt=0, description="step size of the iteration (a and z); a unit enters near step lam*nu/alpha")
    granularity: Literal["shared", "head"] = Field("shared", description="qk/vo masks shared by all heads of a layer, or per head")
    train_weights: bool = Field(False, description="train the weights with the masks (default: frozen)")
    mask_optimizer: Literal["sgd", "adamw"] = Field("sgd", description="sgd: the DessiLBI step; adamw: the SPP code's")
    mask_lr: float = Field(1e-3, gt=0, description="AdamW learning rate of the masks (mask_optimizer adamw)")
    record_every: int = Field(1, ge=1, description="steps between gamma snapshots for the path plot")
    finetune_epochs: float = Field(1.0, ge=0, description="short fine-tune of each extracted model")


class MLPruningConfig(_Strict):
    """Structured pruning to a fraction of the encoder weights (``mlpruning`` and the ``l1-structured`` baseline)."""

    target: float = Field(0.5, gt=0, le=1, description="fraction of the encoder Linears' weights that remains")
    block_size: int = Field(32, ge=1, description="block size of MLPruning's block step (16 or 32 in the paper)")
    align: int = Field(16, ge=1, description="kept FFN units and output rows per layer are rounded to a multiple "
                       "of this (odd widths make matrix kernels much slower); 1: no rounding")
    block_keep: float = Field(1.0, gt=0, le=1, description="share of the shrunk model kept by the block step; 1: no block step")
    block_epochs: float | None = Field(None, ge=0, description="epochs of the block step (default: half of prune.epochs)")
    finetune_epochs: float = Field(0.0, ge=0, description="epochs (of prune.epochs) fine-tuning the shrunk model "
                                   "after the head/row step, with distillation; no block step only")
    threshold_init: float = Field(10.0, description="initial Top-k threshold t (keep ratio sigmoid(t))")
    score_lr: float = Field(1e-2, gt=0, lt=10, description="learning rate of the scores and thresholds")
    distill: bool = Field(True, description="distil from the dense model (the block step: from the step-2 model)")
    temperature: float = Field(2.0, gt=0)
    distill_alpha: float = Field(0.9, ge=0, le=1, description="weight of the teacher terms; 1 - alpha weights the task loss")
    hidden_weight: float = Field(1.0, ge=0, description="weight of each layer's hidden-state MSE (summed over layers)")
    attention_weight: float = Field(1.0, ge=0, description="weight of each layer's attention-probability MSE")


class CompareConfig(_Strict):
    """``pruneformer compare``: which candidates, on which seeds, measured how (see ``compare/flow.py``)."""

    candidates: list[str] = Field(default_factory=lambda: list(DEFAULT_CANDIDATES),
                                  description="METHOD:PATTERN, METHOD:FRACTION kept or spp:RATIO[,RATIO...]")
    seeds: list[Annotated[int, Field(ge=0, le=2**32 - 1)]] = Field(default_factory=lambda: [0], min_length=1,
                                                                    description="one dense model per seed")
    max_drop: float = Field(1.0, ge=0, description="accuracy points the recommendation may lose against dense")
    jobs: int = Field(1, ge=1, le=64, description="candidates trained side by side, one process each")
    threads: int = Field(1, ge=1, le=256, description="torch threads per training process")
    latency_batch: int = Field(32, ge=1, le=4096)
    latency_length: int = Field(128, ge=2, le=8192)
    latency_threads: int | None = Field(None, ge=1, le=256, description="threads while timing (default: all)")
    rounds: int = Field(10, ge=1, le=1000, description="interleaved timing rounds (the fastest counts)")
    onnx: bool = Field(True, description="also export each candidate to ONNX Runtime fp32 and int8 and time those")

    @field_validator("candidates")
    @classmethod
    def _valid_candidates(cls, values: list[str]) -> list[str]:
        """Each candidate names a registered method with a pattern or fraction that parses, now, not after training."""
        try:
            parse_candidates(values)
        except RecipeError as exc:
            raise ValueError(str(exc)) from None
        return values

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, values: list[int]) -> list[int]:
        if len(set(values)) != len(values):
            raise ValueError(f"seeds {values} repeat a seed; give each seed once")
        return values


#: what ``pruneformer compare`` compares when not told: one of each family.
DEFAULT_CANDIDATES = ("admm:2:4", "srste:2:4", "mlpruning:0.5", "mlpruning:0.3", "l1-structured:0.5", "spp:0.3,0.5,0.7")


class Recipe(_Strict):
    """Everything a ``pruneformer prune`` run needs."""

    model: str = Field("embedded", description="'embedded' (MiniLM-L6) or a local model directory")
    output_dir: str = "runs/minilm-2x4"
    seed: int = Field(0, ge=0, le=2**32 - 1, description="numpy's seeds stop at 2**32 - 1")
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    dense: DenseConfig = Field(default_factory=DenseConfig)
    prune: PruneConfig = Field(default_factory=PruneConfig)
    admm: ADMMConfig = Field(default_factory=ADMMConfig)
    srste: SRSTEConfig = Field(default_factory=SRSTEConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    spp: SPPConfig = Field(default_factory=SPPConfig)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    mlpruning: MLPruningConfig = Field(default_factory=MLPruningConfig)
    compare: CompareConfig = Field(default_factory=CompareConfig)

    @model_validator(mode="after")
    def _admm_fits(self) -> "Recipe":
        if self.prune.method in ("admm", "admm-srste") and self.admm.epochs is not None \
                and self.admm.epochs > self.prune.epochs:
            raise ValueError(
                f"admm.epochs ({self.admm.epochs}) exceeds prune.epochs ({self.prune.epochs}), the total budget"
            )
        return self

    @model_validator(mode="after")
    def _mlpruning_fits(self) -> "Recipe":
        m = self.mlpruning
        if self.prune.method == "mlpruning" and m.block_keep < 1:
            if m.target > m.block_keep:
                raise ValueError(f"mlpruning.target ({m.target}) exceeds mlpruning.block_keep ({m.block_keep}): the "
                                 "head/row step would have to keep more than all weights")
            if m.block_epochs is not None and m.block_epochs > self.prune.epochs:
                raise ValueError(f"mlpruning.block_epochs ({m.block_epochs}) exceeds prune.epochs ({self.prune.epochs})")
            if m.finetune_epochs:
                raise ValueError("mlpruning.finetune_epochs needs block_keep 1 (the block step ends the run)")
        if self.prune.method == "mlpruning" and m.finetune_epochs >= self.prune.epochs > 0:
            raise ValueError(f"mlpruning.finetune_epochs ({m.finetune_epochs}) leaves nothing of prune.epochs "
                             f"({self.prune.epochs}) for the head/row step")
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
    both = lambda key, value: isinstance(value, dict) and isinstance(base.get(key), dict)  # noqa: E731
    return {**base, **{k: _deep_merge(base[k], v) if both(k, v) else v for k, v in override.items()}}


def validate_config(cls: type[_Model], data: Any) -> _Model:
    """Validate ``data`` into ``cls`` (a recipe or one of its sections), raising the one-line error."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise _one_line(exc) from None


def build_recipe(data: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None) -> Recipe:
    """Validate a recipe dictionary (with flag overrides merged in) into a :class:`Recipe`."""
    return validate_config(Recipe, _deep_merge(data or {}, overrides or {}))


class _RecipeLoader(yaml.SafeLoader):
    """``yaml.safe_load`` without aliases: a recipe never needs them, and nested aliases can blow a small
    file up into billions of values ("billion laughs")."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "recipes may not use YAML aliases (*name)",
                                              self.peek_event().start_mark)
        return super().compose_node(parent, index)


def load_recipe(path: str | Path | None, overrides: dict[str, Any] | None = None) -> Recipe:
    """Read a YAML recipe (optional) and apply flag overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise RecipeError(f"Recipe file '{path}' does not exist.", "check the path given to --recipe")
        try:
            data = yaml.load(path.read_bytes().decode("utf-8"), Loader=_RecipeLoader) or {}
        except (OSError, UnicodeDecodeError) as exc:
            raise RecipeError(f"Recipe file '{path}' cannot be read as UTF-8 text ({type(exc).__name__}).",
                              "pass a YAML text file to --recipe") from None
        except yaml.YAMLError as exc:
            line = getattr(getattr(exc, "problem_mark", None), "line", None)
            where = f" at line {line + 1}" if line is not None else ""
            problem = f": {exc.problem}" if getattr(exc, "problem", None) else ""
            raise RecipeError(f"Recipe file '{path}' is not valid YAML{where}{problem}.", "fix the YAML syntax") from None
        if not isinstance(data, dict):
            raise RecipeError(f"Recipe file '{path}' must hold a mapping of fields.", "see the README's example recipe")
    return build_recipe(data, overrides)


def recipe_to_yaml(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)


class OneShotRecipe(_Strict):
    """Everything a ``pruneformer oneshot`` run needs: prune a decoder LM once, score its perplexity."""

    model: str = Field("smollm2", description="'smollm2' (SmolLM2-135M GGUF package), a local directory or .gguf")
    output_dir: str = "runs/smollm2-oneshot"
    seed: int = Field(0, ge=0, description="seed of the embedded sentences' split")
    method: str = Field("sparsegpt", description="a registered one-shot method (pruneformer.methods.registry.oneshot_names())")
    pattern: PatternSpec = "2:4"
    data: str = Field("embedded", description="'embedded' (movie-review sentences) or a local text file")
    eval_data: str | None = Field(None, description="held-out text file (default: the data's held-out part)")
    calib_samples: int = Field(64, ge=1, description="calibration blocks of seq_len tokens")
    seq_len: int = Field(128, ge=8, le=8192)
    eval_blocks: int | None = Field(None, ge=1, description="score at most this many held-out blocks")
    batch_size: int = Field(8, ge=1)
    dampening: float = Field(0.01, ge=0, description="SparseGPT and ALPS: Gram dampening, a fraction of its mean diagonal")
    include: LayerRegexes = Field(default_factory=list)
    exclude: LayerRegexes = Field(default_factory=list)
    save: bool = Field(True, description="save the pruned model (safetensors) under output_dir/model")

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        return _registered(value, oneshot_names())


def build_oneshot_recipe(data: dict[str, Any] | None = None) -> OneShotRecipe:
    """Validate one-shot settings into a :class:`OneShotRecipe` (errors are one line naming the field)."""
    return validate_config(OneShotRecipe, data or {})
