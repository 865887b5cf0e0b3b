"""ONNX Runtime's transformer fusions and dynamic int8 quantization of an exported graph.

:func:`quantize_int8` fuses (GELU with its bias, LayerNorm, attention where it matches), checks the fused
fp32 graph against PyTorch, then turns every MatMul and Gemm with a constant weight into int8 but those of
the Linears a user keeps in fp32 (:func:`fp32_linears`: roles, ``classifier``, ``pooler`` or regexes).
:func:`linear_initializers` (fp32) and :func:`stored_linears` (after quantization) find each Linear's weight in
a graph by value, so the record and ``pruneformer inspect`` say what a deployed file holds.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from torch import nn

from ..errors import ExportError
from .runtime import TOLERANCE


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Hide what the exporter, ONNX Runtime's optimizer and its quantizer print and log (registry notices,
    advice about shape inference and pre-processing that the checks afterwards make moot); errors still raise."""
    loggers = [logging.getLogger(name) for name in ("", "torch.onnx", "onnx_ir", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def linear_initializers(graph, model: nn.Module) -> dict[str, tuple[str, bool]]:
    """Module name of every ``nn.Linear`` -> (the ONNX initializer holding its weight, whether it is stored
    transposed as MatMul's ``[in, out]``), found by value: the exporter renames and folds weights, values
    stay exact."""
    from onnx import numpy_helper

    by_shape: dict[tuple[int, ...], list[Any]] = {}
    for init in graph.initializer:
        by_shape.setdefault(tuple(init.dims), []).append(init)
    found: dict[str, tuple[str, bool]] = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or not module.weight.numel():
            continue
        weight = module.weight.detach().cpu().numpy()
        for candidate, transposed in ((weight.T, True), (weight, False)):
            match = next((i.name for i in by_shape.get(candidate.shape, [])
                          if np.array_equal(numpy_helper.to_array(i), candidate)), None)
            if match:
                found[name] = (match, transposed)
                break
    return found


def fp32_linears(model: nn.Module, selectors: Sequence[str]) -> list[str]:
    """Module names of the Linears that ``selectors`` name: a role (query, ffn_out, ...), ``classifier``,
    ``pooler`` or a regex on module names (``none``: nothing). A selector matching nothing is a one-line error."""
    from ..core.targets import resolve_targets
    from ..families import family_of

    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and m.weight.numel()]
    selectors = [s for s in selectors if s != "none"]
    roles: dict[str, list[str]] = {}
    for target in resolve_targets(model):  # a cut can leave a Linear with no row (no graph weight to keep)
        if target.linear_weight.numel():
            roles.setdefault(target.role, []).append(target.name)
    chosen: list[str] = []
    for selector in selectors:
        if selector in roles:
            hits = roles[selector]
        elif selector == "classifier":  # the family's task head, whatever its name
            head = family_of(model).head_module
            hits = [name for name in linears if head in name.split(".")]
        else:
            try:
                pattern = re.compile(selector)
            except re.error as exc:
                raise ExportError(f"--keep-fp32 '{selector}' is not a role or a valid regex ({exc}).",
                                  f"use a role ({', '.join(sorted(roles))}), classifier, pooler or a regex") from None
            hits = [name for name in linears if pattern.search(name)]
        if not hits:
            raise ExportError(f"--keep-fp32 '{selector}' matches no Linear layer of this model.",
                              f"use a role ({', '.join(sorted(roles))}), classifier, pooler or a regex on: "
                              f"{', '.join(list(linears)[:4])}, ...")
        chosen += [h for h in hits if h not in chosen]
    return chosen


def quantize_int8(fp32_path: Path, out_path: Path, model: nn.Module, kept: Sequence[str],
                  check: Callable[[Path], dict[str, Any]], tolerance: float = TOLERANCE,
                  per_channel: bool = True, reduce_range: bool = False) -> dict[str, Any]:
    """ORT's transformer fusions, then dynamic int8 of every MatMul and Gemm weight but those of the Linears
    ``kept``; the record of which Linear is stored how is read back from the quantized graph. ``reduce_range``:
    weights in [-64, 64] (7 bits), which CPUs without VNNI multiply exactly (``hardware.int8_saturates``).

    ``check(path)`` compares a graph with PyTorch; the fused fp32 graph must pass it within the tolerance
    (a fusion that changes the numbers is an error), the int8 graph's numbers are recorded.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    from ..families import family_of

    with tempfile.TemporaryDirectory() as tmp, quiet():
        fused_path = Path(tmp) / "model.fused.onnx"
        # num_heads=0 / hidden_size=0: detect per attention node (pruned layers have their own head counts)
        fused = optimize_model(str(fp32_path), model_type="bert", num_heads=0, hidden_size=0, opt_level=0)
        fusions = {k: v for k, v in fused.get_fused_operator_statistics().items() if v}
        if family_of(model).rotary:  # decoders: the exporter's shape annotations disagree with the quantizer's
            del fused.model.graph.value_info[:]  # inference (GQA's narrower K/V); let it infer them afresh
        fused.save_model_to_file(str(fused_path))
        fused_check = check(fused_path)
        if not fused_check["max_abs_diff"] <= tolerance:
            raise ExportError(f"ONNX Runtime's fused graph differs from PyTorch by {fused_check['max_abs_diff']:.2e} "
                              f"(tolerance {tolerance:g}).", "export without --quantize, and report this model")
        graph = onnx.load(str(fused_path)).graph
        fused_linears = linear_initializers(graph, model)
        excluded_weights = {fused_linears[name][0] for name in kept if name in fused_linears}
        # The pooler and the classifier are Gemm nodes; quantize_dynamic first rewrites each Gemm into a MatMul
        # named "<gemm>_MatMul" (onnxruntime.quantization.onnx_model.replace_gemm_with_matmul), so that is the
        # name to exclude. The record below is read off the quantized graph, so a rename would be caught.
        excluded = [name for n in graph.node if excluded_weights & set(n.input)
                    for name in {"MatMul": [n.name], "Gemm": [n.name, f"{n.name}_MatMul"]}.get(n.op_type, [])]
        excluded += empty_products(graph)
        quantize_dynamic(str(fused_path), str(out_path), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                         nodes_to_exclude=excluded, per_channel=per_channel, reduce_range=reduce_range,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    stored = stored_linears(onnx.load(str(out_path)).graph, model)
    wrongly = sorted(name for name in kept if stored[name][2] != "fp32")
    if wrongly:
        raise ExportError(f"ONNX Runtime's quantizer turned {', '.join(wrongly)} into int8 although --keep-fp32 names "
                          "them.", "export without --keep-fp32 for those layers, and report this model")
    return {"fusions": fusions, "fused_fp32_check": fused_check,
            "int8_linears": sorted(n for n, (_, _, dtype) in stored.items() if dtype == "int8"),
            "fp32_linears": sorted(n for n, (_, _, dtype) in stored.items() if dtype == "fp32"),
            "weights": stored}


def empty_products(graph) -> list[str]:
    """MatMul / Gemm nodes whose constant weight has an empty inner dimension: the attention output of a layer that
    lost every head, an FFN that lost every unit (``ConstantOfShape([batch, seq, 0]) @ W[0, hidden]``, the bias
    alone). They stay fp32: ONNX Runtime 1.32's ``DynamicQuantizeLinear`` + ``MatMulInteger`` on an empty tensor
    returns whatever its buffer held (measured: the 4-epoch L1 0.2 model of seed 0, whose layer 4 kept no head,
    scored 59.2 to 78.0 on test from one export to the next, 82.0 in fp32), while the fp32 MatMul returns zeros."""
    shapes = {init.name: tuple(init.dims) for init in graph.initializer}
    return [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm")
            and any(0 in shapes.get(i, ()) for i in n.input[1:2])]


def stored_linears(graph, model: nn.Module) -> dict[str, tuple[str, bool, str]]:
    """Module name of every ``nn.Linear`` -> (its weight's initializer in a quantized graph, whether it is stored
    transposed, ``"fp32"`` or ``"int8"``), read off the graph by value: an fp32 weight is there exactly, an int8
    one is a tensor whose dequantized values ``(q - zero_point) * scale`` are within half a step of the weight.

    Why by value, not by name: the quantizer names a MatMul's weight ``<w>_quantized`` but a Gemm's
    ``<w>_Transposed_quantized``; a record built from names listed Gemm layers as fp32 while they were int8.
    A Linear found neither way is an error: the record would not say what the file holds.
    """
    from onnx import TensorProto

    found = {name: (init, transposed, "fp32") for name, (init, transposed) in linear_initializers(graph, model).items()}
    tables = {init.name: init for init in graph.initializer}
    quantized = [init for init in graph.initializer if init.data_type in (TensorProto.INT8, TensorProto.UINT8)
                 and len(init.dims) == 2 and init.name.endswith("_quantized")
                 and f"{init.name.removesuffix('_quantized')}_scale" in tables]
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or not module.weight.numel() or name in found:
            continue
        weight = module.weight.detach().cpu().numpy().astype(np.float64)
        match = next(((init.name, transposed) for init in quantized
                      for candidate, transposed in ((weight.T, True), (weight, False))
                      if tuple(init.dims) == candidate.shape and _rounds_to(init, tables, candidate)), None)
        if match is None:
            raise ExportError(f"The int8 graph holds no weight that matches Linear {name}.",
                              "export without --quantize, and report this model")
        found[name] = (*match, "int8")
    return found


def _rounds_to(init, tables: dict[str, Any], weight: np.ndarray) -> bool:
    """Whether the int8 initializer ``init``, dequantized with its ``_scale`` and ``_zero_point``
    (``(q - zero_point) * scale``), is ``weight`` to within half a quantization step."""
    from onnx import numpy_helper

    base = init.name.removesuffix("_quantized")
    q = numpy_helper.to_array(init).astype(np.float64)
    if q.shape != weight.shape:
        return False

    def along(table) -> np.ndarray:  # per tensor: a scalar; per channel (--per-channel): one value per column
        value = numpy_helper.to_array(table).astype(np.float64).reshape(-1)
        if value.size == 1:
            return value.reshape(())
        axis = next((a for a in (weight.ndim - 1, 0) if weight.shape[a] == value.size), None)
        if axis is None:
            return np.full((), np.nan)
        return value.reshape([-1 if a == axis else 1 for a in range(weight.ndim)])

    scale = along(tables[f"{base}_scale"])
    zero = tables.get(f"{base}_zero_point")
    q = q - (along(zero) if zero else 0.0)
    return bool(np.all(np.abs(q * scale - weight) <= 0.5 * scale * (1 + 1e-5)))
