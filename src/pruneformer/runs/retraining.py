"""What every physically smaller model gets after its cut: distillation from the model it was cut from, and
quantization-aware fine-tuning for its int8 export.

One place for both, so that the structured runs (MLPruning, the L1 baseline, Fisher: ``runs/structured.py``) and
SPP's cuts (``runs/solution_path.py``) retrain the same way at the same budget: a comparison of methods is then
a comparison of which heads, units and dimensions they keep, not of how each one was fine-tuned afterwards.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from ..train.distill import Distiller
from ..train.loop import PhaseResult
from .recipe import Recipe

#: the run-state key (and checkpoint folder) of the QAT stage
QAT_KEY = "phase2-qat"


def mlpruning_distiller(teacher: nn.Module, layers: int, recipe: Recipe, attention: bool) -> Distiller:
    """MLPruning's loss, 0.9 * [KL(T=2) * 4 + sum MSE(hidden) + sum MSE(attention)] + 0.1 * CE, by default.
    The ``mlpruning`` section's weights serve every shrunk model's retraining (L1's, SPP's cuts')."""
    m = recipe.mlpruning
    return Distiller(teacher, temperature=m.temperature, alpha=m.distill_alpha,
                     hidden_weight=m.distill_alpha * m.hidden_weight * (layers + 1),
                     attention_weight=m.distill_alpha * m.attention_weight * layers if attention else 0.0)


def qat_settings(recipe: Recipe) -> dict[str, Any]:
    """The ``qat`` settings a stage records (and a resumed stage must match)."""
    q = recipe.qat
    return {"epochs": q.epochs, "per_channel": q.per_channel, "keep_fp32": list(q.keep_fp32),
            "reduce_range": q.reduce_range}


def fine_tune_int8(model: nn.Module, recipe: Recipe, teacher: nn.Module | None,
                   train: Callable[[float, float, Distiller | None], PhaseResult],
                   log: Callable[[str], None]) -> tuple[PhaseResult, dict[str, Any]]:
    """``qat.epochs`` of fine-tuning with the export's int8 rounding in the forward pass (weights per channel or
    per tensor, activations per tensor at run time), distilled from ``teacher`` when one is given (each caller
    decides by its own switch: ``mlpruning.distill``, ``spp.distill``); the
    weights end on their int8 grid, so ``export --quantize int8`` with the same settings stores what trained.
    ``train(epochs, lr, distiller)`` runs one checkpointed phase of the caller's loop. Returns the phase and the
    record (:func:`qat_settings` plus which Linears were simulated)."""
    from ..deploy.fake_quant import simulate_int8

    q = recipe.qat
    simulation = simulate_int8(model, q.keep_fp32, q.per_channel, q.reduce_range)
    layers = model.config.num_hidden_layers
    distiller = mlpruning_distiller(teacher, layers, recipe, attention=False) if teacher is not None else None
    result = train(q.epochs, q.lr or recipe.prune.lr, distiller)
    simulation.remove(leave_quantized=True)
    log(f"{result.name}: {result.steps} steps in {result.wall_time_s:.0f}s ({simulation.summary()['int8_linears']} "
        f"Linears in simulated int8, {'per channel' if q.per_channel else 'per tensor'}"
        f"{', range [-64, 64]' if q.reduce_range else ''})")
    return result, qat_settings(recipe) | simulation.summary()
