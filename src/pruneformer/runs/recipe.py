"""The validated configuration of a pruning run: the one place defaults live.

A recipe comes from YAML, from command-line flags, or both (flags override the file). Validation errors
become one line naming the field and what it accepts, e.g.
``Recipe field 'admm.rho': Input should be greater than 0. Fix: ...``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, Field, ValidationError, create_model, field_validator, model_validator

from ..core.settings import LayerRegexes, PatternSpec, Settings
from ..errors import RecipeError
from ..methods.candidates import parse_candidates
from ..methods.registry import method_entry, method_names, oneshot_names, sections


def _registered(value: str, names: tuple[str, ...]) -> str:
    """The method names come from the registry (``methods/registry.py``), so a registered method is accepted
    here without editing this module; the message reads like pydantic's own for a fixed choice."""
    if value not in names:
        choices = ", ".join(f"'{n}'" for n in names[:-1]) + f" or '{names[-1]}'"
        raise ValueError(f"Input should be {choices}")
    return value


_Model = TypeVar("_Model", bound=BaseModel)


class DataConfig(Settings):
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
    augment: bool = Field(False, description="images: random crops and flips of the training images")
    image_size: int | None = Field(None, ge=14, le=1024, description="images: the square crop in pixels the model "
                                   "sees (shortest edge resized to 8/7 of it first); default: the model's processor's")
    max_train: int | None = Field(None, ge=1, description="subsample the training split (presets)")
    max_eval: int | None = Field(None, ge=1, description="subsample dev/test")


class TrainConfig(Settings):
    """Optimisation settings shared by every phase."""

    batch_size: int = Field(32, ge=1)
    eval_batch_size: int = Field(128, ge=1)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    max_grad_norm: float | None = Field(1.0, gt=0)
    log_every: int = Field(10, ge=1)
    checkpoint_every: int = Field(100, ge=1, description="optimizer steps between resumable checkpoints")
    group_by_length: bool = Field(True, description="batch sentences of similar length (less padding, faster)")


class DenseConfig(Settings):
    """The dense fine-tune that gives the baseline, the teacher and the starting point of pruning."""

    epochs: float = Field(1.0, ge=0)
    lr: float = Field(5e-5, gt=0, lt=1)
    checkpoint: str | None = Field(None, description="reuse an already fine-tuned dense model directory")


class PruneConfig(Settings):
    """The pruning schedule after the dense fine-tune."""

    method: str = Field("alps-retrain", description="a registered method name (pruneformer.methods.registry.method_names()); "
                        "default: ALPS one-shot then masked retraining, the N:M winner of the standard benchmark")
    pattern: PatternSpec = "2:4"
    epochs: float = Field(2.0, ge=0, description="total epochs of the retraining phases")
    lr: float = Field(5e-5, gt=0, lt=1)
    include: LayerRegexes = Field(default_factory=list)
    exclude: LayerRegexes = Field(default_factory=list)

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        return _registered(value, method_names())



class DistillConfig(Settings):
    """Knowledge distillation from the dense fine-tuned model during the retraining phases."""

    enabled: bool = False
    temperature: float = Field(2.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the teacher term against the task loss")
    hidden_weight: float = Field(0.0, ge=0, description="weight of the hidden-state MSE")
    during_admm: bool = Field(False, description="also distil during ADMM (its student starts equal to the teacher, "
                              "so the term mostly fights the penalty)")


class QATConfig(Settings):
    """Quantization-aware fine-tuning after the pruning budget (``deploy/fake_quant.py``): the shrunk model trains
    with the rounding of ``export --quantize int8`` in its forward pass, so the deployed int8 keeps its accuracy.
    Methods that shrink the model only (their int8 export is the CPU deployment; N:M runs at dense speed there)."""

    epochs: float = Field(0.0, ge=0, description="epochs of quantization-aware fine-tuning after pruning (0: none)")
    lr: float | None = Field(None, gt=0, lt=1, description="its peak learning rate (default: prune.lr)")
    per_channel: bool = Field(True, description="one weight scale per output feature, as export's default "
                              "--per-channel; export with the same setting")
    keep_fp32: list[str] = Field(default_factory=lambda: ["classifier"],
                                 description="Linears left in fp32, as export's --keep-fp32 (export with the same)")
    reduce_range: bool = Field(False, description="int8 weights in [-64, 64], as export's --reduce-range: exact on "
                               "every CPU (full-range products are clipped by CPUs without VNNI); export with the same")


class CompareConfig(Settings):
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


class Recipe(Settings):
    """Everything a ``pruneformer prune`` run needs: these core sections, plus every registered method's own
    (``admm``, ``srste``, ``calibration``, ``mlpruning``, ``spp``, a plugin's), added by :func:`recipe_model`."""

    model: str = Field("embedded", description="'embedded' (MiniLM-L6) or a local model directory")
    output_dir: str = "runs/minilm-2x4"
    seed: int = Field(0, ge=0, le=2**32 - 1, description="numpy's seeds stop at 2**32 - 1")
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    dense: DenseConfig = Field(default_factory=DenseConfig)
    prune: PruneConfig = Field(default_factory=PruneConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    qat: QATConfig = Field(default_factory=QATConfig)
    compare: CompareConfig = Field(default_factory=CompareConfig)

    @model_validator(mode="after")
    def _method_fits(self) -> "Recipe":
        """The checks the method's own sections hold against the rest of the recipe (e.g. ADMM's epochs
        inside the budget); this module names no method."""
        entry = method_entry(self.prune.method)
        for name in entry.checks:
            getattr(self, name).check_recipe(self)
        return self


_MODELS: dict[tuple[tuple[str, type], ...], type[Recipe]] = {}


def recipe_model() -> type[Recipe]:
    """The full recipe schema: :class:`Recipe` with a field for every registered section (built once per
    set of sections, so a plugin's section is part of every recipe validated after its registration)."""
    key = tuple(sections().items())
    if key not in _MODELS:
        _MODELS[key] = create_model("Recipe", __base__=Recipe, __module__=__name__, **{
            name: (cls, Field(default_factory=cls)) for name, cls in key})
    return _MODELS[key]


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
    return validate_config(recipe_model(), _deep_merge(data or {}, overrides or {}))


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


class OneShotRecipe(Settings):
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
