"""The int8 that ``export --quantize int8`` deploys, computed in PyTorch: for quantization-aware fine-tuning.

Why: a shrunk model that scores well in fp32 can lose points when ONNX Runtime runs it in int8 (the 4-epoch
L1 0.2 models of the standard benchmark lost 11 points on average, one seed 22), and keeping layers in fp32
buys back little (``benchmarks/int8_sensitivity.py``: the loss is spread over many layers). Fine-tuning with
the deployed rounding in the forward pass lets the weights settle where int8 keeps their function.

What is simulated is exactly what :func:`pruneformer.deploy.quantize.quantize_int8` asks ONNX Runtime for
(``quantize_dynamic``, ``QuantType.QInt8``, ``reduce_range`` as the export's ``--reduce-range``), Linear by
Linear, for every Linear the export turns into int8 (all but those ``keep_fp32`` names, as
:func:`~pruneformer.deploy.quantize.fp32_linears` reads them), computed exactly, as VNNI and AMX CPUs compute it
(a CPU without VNNI clips full-range products, :func:`pruneformer.deploy.hardware.int8_saturates`):

* the input, per tensor at run time (``DynamicQuantizeLinear``): uint8 over ``[min(x, 0), max(x, 0)]``,
  scale ``(hi - lo) / 255``, zero point ``round(-lo / scale)``, round half to even;
* the weight, symmetric int8 in ``[-127, 127]`` with scale ``max|w| / 127`` (``reduce_range``: ``[-64, 64]``,
  ``max|w| / 64``, the range that CPUs without VNNI multiply exactly, see
  :func:`pruneformer.deploy.hardware.int8_saturates`), per tensor or one per output feature (``per_channel``, the
  export's default);
* the bias added in fp32 after the integer product.

Gradients pass the rounding straight through (the straight-through estimator). :meth:`Int8Simulation.remove`
leaves each weight on its int8 grid, so the export quantizes it back to exactly the values trained.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

#: ONNX Runtime's symmetric int8 range (``get_qmin_qmax_for_qType(QInt8, symmetric=True)``)
WEIGHT_LEVELS = 127
#: its reduced range (``ONNX_INT_TYPE_REDUCED_RANGE[INT8]``, ``reduce_range=True``): 7-bit weights
REDUCED_WEIGHT_LEVELS = 64
#: uint8 activations
ACTIVATION_LEVELS = 255


def _straight_through(x: torch.Tensor, rounded: torch.Tensor) -> torch.Tensor:
    """``rounded`` forward, identity backward."""
    return x + (rounded - x).detach()


def weight_levels(reduce_range: bool = False) -> int:
    """The largest int8 weight magnitude the export stores: 127, or 64 with ``reduce_range``."""
    return REDUCED_WEIGHT_LEVELS if reduce_range else WEIGHT_LEVELS


def quantize_weight(weight: torch.Tensor, per_channel: bool = True, reduce_range: bool = False) -> torch.Tensor:
    """``weight`` ([out, in], a Linear's) rounded to symmetric int8 and back; one scale per row when
    ``per_channel`` (a row is an output feature: a column of ONNX's ``[in, out]`` MatMul weight)."""
    levels = weight_levels(reduce_range)
    absmax = weight.detach().abs().amax(dim=1, keepdim=True) if per_channel else weight.detach().abs().max()
    scale = torch.where(absmax > 0, absmax / levels, torch.ones_like(absmax))
    return _straight_through(weight, torch.clamp(torch.round(weight / scale), -levels, levels) * scale)


def quantize_activation(x: torch.Tensor) -> torch.Tensor:
    """``x`` through ``DynamicQuantizeLinear`` and back: one uint8 scale and zero point for the whole tensor."""
    lo = torch.clamp(x.detach().min(), max=0.0)
    hi = torch.clamp(x.detach().max(), min=0.0)
    if hi - lo <= 0:
        return x
    scale = (hi - lo) / ACTIVATION_LEVELS
    zero = torch.clamp(torch.round(-lo / scale), 0, ACTIVATION_LEVELS)
    q = torch.clamp(torch.round(x / scale) + zero, 0, ACTIVATION_LEVELS)
    return _straight_through(x, (q - zero) * scale)


class _Int8Weight(nn.Module):
    """A parametrization: the weight as the int8 graph stores it (its fp32 original is what trains)."""

    def __init__(self, per_channel: bool, reduce_range: bool) -> None:
        super().__init__()
        self.per_channel = per_channel
        self.reduce_range = reduce_range

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return quantize_weight(weight, self.per_channel, self.reduce_range)


def _quantize_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    return (quantize_activation(args[0]), *args[1:])


@dataclass
class Int8Simulation:
    """The Linears of a model computing in simulated int8 (:func:`simulate_int8`); :meth:`remove` ends it."""

    model: nn.Module
    linears: list[str]
    fp32: list[str]
    per_channel: bool
    reduce_range: bool = False
    _hooks: list[Any] = field(default_factory=list, repr=False)

    def remove(self, leave_quantized: bool = True) -> None:
        """Back to plain Linears; with ``leave_quantized`` each weight keeps its int8-grid values (what the
        export will store), else its fp32 original."""
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        for name in self.linears:
            module = self.model.get_submodule(name)
            if parametrize.is_parametrized(module, "weight"):
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=leave_quantized)

    def summary(self) -> dict[str, Any]:
        return {"int8_linears": len(self.linears), "fp32_linears": self.fp32, "per_channel": self.per_channel,
                "reduce_range": self.reduce_range}


def simulate_int8(model: nn.Module, keep_fp32: Sequence[str] = ("classifier",), per_channel: bool = True,
                  reduce_range: bool = False) -> Int8Simulation:
    """Make ``model`` compute as its ``export --quantize int8 [--keep-fp32 ...] [--reduce-range]`` graph does on a
    CPU whose int8 is exact (VNNI, AMX; any CPU with ``reduce_range``), in place.

    ``keep_fp32`` takes the export's selectors (roles, ``classifier``, ``pooler``, regexes); a selector matching
    nothing is the export's own one-line error, raised here before any training."""
    from .quantize import fp32_linears

    kept = fp32_linears(model, keep_fp32)
    names = [name for name, m in model.named_modules()
             if isinstance(m, nn.Linear) and m.weight.numel() and name not in kept]
    simulation = Int8Simulation(model, names, kept, per_channel, reduce_range)
    for name in names:
        module = model.get_submodule(name)
        parametrize.register_parametrization(module, "weight", _Int8Weight(per_channel, reduce_range))
        simulation._hooks.append(module.register_forward_pre_hook(_quantize_input))
    return simulation
