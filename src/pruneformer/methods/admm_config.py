"""ADMM's recipe section (``admm``) and its rho defaults, which depend on how the pull is measured."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from ..core.settings import Settings

#: (rho, rho_max) when the recipe leaves them unset: a fraction per step (``fixed``), or 1 / lr units (``lr``).
DEFAULT_RHO = {"fixed": (0.02, 0.3), "lr": (30.0, 3000.0)}


def resolve_rho(pull: str, penalty: str, rho: float | None, rho_max: float | None) -> tuple[float, float]:
    """(rho, rho_max) with the pull's defaults filled in; ValueError when the settings cannot work together
    (the recipe validates with this too, so a bad combination fails before any training)."""
    if pull == "lr" and penalty != "decoupled":
        raise ValueError("pull 'lr' is a proximal step after the optimizer: it needs penalty 'decoupled'")
    rho = DEFAULT_RHO[pull][0] if rho is None else rho
    rho_max = DEFAULT_RHO[pull][1] if rho_max is None else rho_max
    if rho > rho_max:  # the units differ by pull: a fixed-pull rho_max would cap an lr-pull rho at nothing
        raise ValueError(f"rho ({rho:g}) is above rho_max ({rho_max:g}) with pull '{pull}' (defaults "
                         + ", ".join(f"{k} {v[0]:g} / {v[1]:g}" for k, v in DEFAULT_RHO.items()) + ")")
    return rho, rho_max


class ADMMConfig(Settings):
    """ADMM's split: how long, how often Z and U move, and how hard W is pulled towards Z."""

    flags: ClassVar[dict[str, str]] = {
        "admm-epochs": "epochs", "admm-interval": "interval", "admm-pull": "pull", "admm-score": "score",
        "rho": "rho", "rho-schedule": "rho_schedule", "rho-factor": "rho_factor", "rho-max": "rho_max",
        "admm-penalty": "penalty"}

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

    def phase_epochs(self, budget: float) -> float:
        """Epochs of ADMM inside a pruning budget of ``budget`` epochs (default: half of it)."""
        return budget / 2 if self.epochs is None else self.epochs

    def check_recipe(self, recipe: Any) -> None:
        if self.epochs is not None and self.epochs > recipe.prune.epochs:
            raise ValueError(f"admm.epochs ({self.epochs}) exceeds prune.epochs ({recipe.prune.epochs}), the total budget")

    @classmethod
    def fit_candidate(cls, section: dict[str, Any], budget: float, value: float | None) -> dict[str, Any]:
        """A compare candidate with a smaller budget than the recipe's ADMM epochs gets the default half."""
        return {**section, "epochs": None} if (section.get("epochs") or 0) > budget else section
