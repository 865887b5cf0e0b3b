"""Export a saved model to ONNX, check it against PyTorch, and optionally fuse and quantize it to int8.

Every model pruneformer saves leaves PyTorch the same way: dense and N:M-masked models (plain transformers
classes), MLPruning / L1 shrunk models and SPP cuts (``shrunk-bert``, per-layer heads, head widths, FFN
widths and kept output rows). ``export_model`` writes ``OUT/model.onnx`` with dynamic batch and sequence
axes, the tokenizer beside it and ``export.json``, then runs ONNX Runtime on real sentences and compares the
logits with PyTorch's: a difference above the tolerance is a one-line :class:`ExportError`, never a silent
bad file.

Why opset 23: torch's exporter writes ``F.scaled_dot_product_attention`` as ONNX's own ``Attention`` op,
one fused node per layer whose 4-D inputs carry that layer's head count and widths. ONNX Runtime's Python
attention fusion (``onnxruntime.transformers.optimizer``) matches the graphs of older exporters and of
transformers' older mask code only: on these graphs it fuses no attention, even with ``num_heads=0`` (auto-
detect), so pruned heads would otherwise run as a dozen small ops per layer.

``quantize="int8"``: ``onnxruntime.transformers.optimizer`` (its fusions: GELU with its bias, LayerNorm,
attention where it matches) writes a fused fp32 graph, which must still match PyTorch within the tolerance;
then ONNX Runtime's dynamic quantization turns every MatMul with a constant weight into int8, except the
Linears named in ``keep_fp32`` (roles, module-name regexes, ``classifier``, ``pooler``). The accuracy of the
fp32 and the int8 model on the dev split is written beside them (``quantization.json``).
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ExportError
from ..families import family_of
from ..models.saved import load_pruned_model
from ..version import __version__
from .hardware import instruction_set, int8_saturates
from .quantize import fp32_linears, linear_initializers, quantize_int8, quiet
from .runtime import DISABLED_FUSIONS, MODEL_INPUTS, TOLERANCE, compare, input_names, score, session, split_batches

ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
EXPORT_FILE = "export.json"
QUANTIZATION_FILE = "quantization.json"
FORMATS = ("onnx",)
QUANTIZATIONS = ("int8",)
#: Opset 23 is the first with ONNX's ``Attention`` op (see the module docstring).
OPSET = 23
#: Real sentences for the check after export: lengths from 3 to 40 words, so batches are padded.
CHECK_SENTENCES = (
    "A gripping, beautifully acted film.",
    "Dull.",
    "The plot never comes together, and the last hour drags on without any reason to care about anyone in it.",
    "It is funny, warm and surprisingly moving, with a soundtrack that stays with you.",
    "Not the worst thing I have seen this year, but close.",
    "An ambitious mess: some scenes soar, others fall flat, and the ending is a cop-out that undoes much of "
    "what the first two acts built so carefully.",
    "I loved it.",
    "Visually stunning yet emotionally empty.",
)


def check_choice(value: str | None, allowed: Sequence[str], option: str) -> str | None:
    """``value`` if it is one of ``allowed`` (None passes), else a one-line error naming the option."""
    if value is None or value in allowed:
        return value
    raise ExportError(f"{option} '{value}' is not supported.", f"use {option} {' or '.join(allowed)}")


class _Logits(nn.Module):
    """The classifier as a function of token tensors (or an image batch) to logits: what the ONNX graph computes."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None) -> torch.Tensor:
        if pixel_values is not None:
            return self.model(pixel_values=pixel_values).logits
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits


def check_inputs(tokenizer: Any, model: nn.Module | None = None,
                 sentences: Sequence[str] = CHECK_SENTENCES) -> list[dict[str, torch.Tensor]]:
    """Two batches of real sentences: all of them padded to the longest, and the longest one alone (another
    batch size and sequence length, so both dynamic axes are exercised). With ``model``, only the inputs its
    ``forward`` takes (DistilBERT has no ``token_type_ids``): they become the graph's inputs."""
    import inspect

    if model is not None and family_of(model).modality == "image":
        return image_check_inputs(tokenizer)
    source = getattr(model, "forward_module", model)  # a wrapper (a generic shrunk model) names what it runs
    accepted = inspect.signature(source.forward).parameters if model is not None else MODEL_INPUTS
    names = [name for name in input_names(tokenizer) if name in accepted]

    def encode(texts: Sequence[str]) -> dict[str, torch.Tensor]:
        batch = tokenizer(list(texts), padding=True, truncation=True, max_length=128, return_tensors="pt")
        return {k: batch[k] for k in names}

    return [encode(sentences), encode([max(sentences, key=len)])]


def image_check_inputs(processor: Any, sizes: Sequence[int] = (3, 1)) -> list[dict[str, torch.Tensor]]:
    """Batches of seeded random images (250 x 250 RGB, as the textile task's) through the model's own image
    processor: what an image classifier's export is checked on."""
    generator = np.random.default_rng(0)
    return [{"pixel_values": processor(images=[generator.integers(0, 256, (250, 250, 3), dtype=np.uint8)
                                               for _ in range(n)], return_tensors="pt")["pixel_values"]}
            for n in sizes]


@torch.no_grad()
def full_output_rows(model: nn.Module) -> nn.Module:
    """A copy of a shrunk model whose Linears with kept output rows compute every row, the removed ones from
    zero weights: the same numbers (a removed row is its bias either way) in a form ONNX runs fast.

    PyTorch scatters the kept rows into the hidden vector with ``index_add``. In ONNX that is a scatter
    wrapped in three transposes, or a Gather along the last axis; ONNX Runtime runs either slower than the
    whole matrix product (on MLPruning's 0.2 model a Gather per layer took about 30% of the time, the zero
    rows cost less than that). Other models are returned as they are.
    """
    from ..compress.modeling_shrunk import RowLinear
    from ..compress.modeling_shrunk_bert import ShrunkOutput

    def row_cut(m: nn.Module) -> bool:
        return isinstance(m, RowLinear) or (isinstance(m, ShrunkOutput) and m.bias is not None)

    if not any(row_cut(m) for m in model.modules()):
        return model
    model = copy.deepcopy(model)
    for module in [m for m in model.modules() if isinstance(m, ShrunkOutput) and m.bias is not None]:
        dense = nn.Linear(module.dense.in_features, module.bias.numel())
        dense.weight.zero_()
        dense.weight[module.rows] = module.dense.weight
        dense.bias.copy_(module.bias)
        module.dense, module.bias = dense, None
    for name, module in [(n, m) for n, m in model.named_modules() if isinstance(m, RowLinear)]:
        dense = nn.Linear(module.in_features, module.full_bias.numel())
        dense.weight.zero_()
        dense.weight[module.rows] = module.weight
        dense.bias.copy_(module.full_bias)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, dense)
    return model


@torch.no_grad()
def export_onnx(model: nn.Module, example: dict[str, torch.Tensor], path: Path) -> Path:
    """Write ``model``'s logits as an ONNX graph with dynamic ``batch`` and ``sequence`` axes.

    Rotary families (Llama, Qwen2) are exported without the exporter's graph optimizer: it fuses their rotary
    embedding into an ONNX ``RotaryEmbedding`` node whose cos/sin caches ONNX Runtime 1.2x rejects at run time
    ("expected to have the same shape as input 'x'"); unfused, the graph matches PyTorch to ~1e-7."""
    model.eval()
    config = model.config
    positions = getattr(config, "max_position_embeddings", None) or getattr(config, "base_config", {}).get(
        "max_position_embeddings")  # absolute position tables bound the sequence axis (torch.export guards it)
    batch = torch.export.Dim("batch")
    sequence = torch.export.Dim("sequence", max=positions) if positions else torch.export.Dim("sequence")
    shapes = {name: {0: batch} if name == "pixel_values" else {0: batch, 1: sequence} for name in example}
    with quiet():
        try:
            program = torch.onnx.export(_Logits(model), (), kwargs=dict(example), dynamo=True, opset_version=OPSET,
                                        dynamic_shapes=shapes, input_names=list(example), output_names=["logits"],
                                        verbose=False, optimize=not family_of(model).rotary)
        except Exception as exc:  # noqa: BLE001 - torch.export raises many kinds
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ExportError(f"torch.onnx.export could not export this model: {first}",
                              "check that the model runs in PyTorch (pruneformer eval); report the error with the "
                              "model's config.json") from exc
    program.save(str(path))
    import onnx

    graph = onnx.load(str(path))
    if attention_to_3d(graph.graph):
        onnx.save(graph, str(path))
    return path


def attention_to_3d(graph) -> int:
    """Feed each ``Attention`` node the ``[batch, sequence, heads * width]`` projections, with its head count
    as ``q_num_heads`` / ``kv_num_heads``, instead of the exporter's reshape + transpose to 4-D and back.

    The exporter writes SDPA's 4-D layout, which costs four transposes of full-size tensors per layer;
    ONNX Runtime's Attention kernel takes the 3-D layout directly (1.3x faster on a MiniLM-sized layer at
    batch 32, length 128). The head count is read from each layer's own reshape, so per-layer head counts
    stay right. A node that does not have exactly that shape is left as it is; the export check then
    compares the graph with PyTorch either way. Returns the number of nodes rewritten.
    """
    from onnx import helper, numpy_helper

    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    constants.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node
                      if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})

    def width(reshape) -> int | None:
        """H * D: the output width of the projection that feeds the reshape (MatMul, maybe + bias)."""
        node = producer.get(reshape.input[0])
        if node is not None and node.op_type == "Add":
            node = next((producer[i] for i in node.input if i in producer and producer[i].op_type == "MatMul"), None)
        weight = constants.get(node.input[1]) if node is not None and node.op_type == "MatMul" else None
        return int(weight.shape[-1]) if weight is not None and weight.ndim == 2 else None

    def heads_of(reshape) -> int | None:
        """H of a reshape to [B, S, H, D] whose shape is a Concat ending in constants H and D; H = -1 (as
        transformers' BERT writes it) is H * D // D."""
        shape = producer.get(reshape.input[1])
        if shape is None or shape.op_type != "Concat" or len(shape.input) != 4:
            return None
        heads, head_dim = (constants.get(name) for name in shape.input[2:])
        if heads is None or head_dim is None or heads.size != 1 or head_dim.size != 1:
            return None
        heads, head_dim = int(heads.reshape(-1)[0]), int(head_dim.reshape(-1)[0])
        total = width(reshape) if heads < 1 else heads * head_dim
        return total // head_dim if head_dim > 0 and total and total % head_dim == 0 else None

    def split_heads(name: str):
        """(3-D input, heads, [transpose, reshape]) when ``name`` is transpose(reshape(x), 0 2 1 3)."""
        transpose = producer.get(name)
        if transpose is None or transpose.op_type != "Transpose" or len(consumers[name]) != 1:
            return None
        if list(transpose.attribute[0].ints) != [0, 2, 1, 3]:
            return None
        reshape = producer.get(transpose.input[0])
        if reshape is None or reshape.op_type != "Reshape" or len(consumers[transpose.input[0]]) != 1:
            return None
        heads = heads_of(reshape)
        return (reshape.input[0], heads, [transpose, reshape]) if heads else None

    rewritten, dead = 0, []
    for node in [n for n in graph.node if n.op_type == "Attention" and len(n.input) >= 3]:
        parts = [split_heads(name) for name in node.input[:3]]
        after = consumers.get(node.output[0], [])
        if any(p is None for p in parts) or len({p[1] for p in parts}) != 1 or len(after) != 1:
            continue
        transpose = after[0]
        merge = consumers.get(transpose.output[0], [])
        if transpose.op_type != "Transpose" or list(transpose.attribute[0].ints) != [0, 2, 1, 3] \
                or len(merge) != 1 or merge[0].op_type != "Reshape":
            continue
        for i, part in enumerate(parts):
            node.input[i] = part[0]
            dead += part[2]
        node.output[0] = merge[0].output[0]
        node.attribute.extend([helper.make_attribute("q_num_heads", parts[0][1]),
                               helper.make_attribute("kv_num_heads", parts[0][1])])
        dead += [transpose, merge[0]]
        rewritten += 1
    for node in dead:
        graph.node.remove(node)
    return rewritten


def export_model(model_dir: str | Path, output_dir: str | Path, *, fmt: str = "onnx", quantize: str | None = None,
                 keep_fp32: Sequence[str] = ("classifier",), tolerance: float = TOLERANCE,
                 dev: Callable[[Any], tuple[Any, Sequence[str]]] | None = None, trust_pickle: bool = False,
                 per_channel: bool = True, reduce_range: bool = False,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Export ``model_dir`` to ``output_dir`` (see the module docstring); returns the ``export.json`` record.

    ``dev(tokenizer)`` gives a tokenized split and its metrics: it is scored with the fp32 and the int8 graph
    when quantizing, and compared between PyTorch and the fp32 graph on every example. ``per_channel``: one int8
    scale per output column (the default: on the standard benchmark's models it cost 0.17-0.23 points of test
    accuracy against 0.50-0.63 per tensor, at the same speed; ``benchmarks/results/int8_choices-standard.md``).
    ``reduce_range``: int8 weights in [-64, 64], which every CPU multiplies exactly; full-range weights are exact
    on VNNI / AMX CPUs only, and an AVX2 CPU clips their products (``hardware.int8_saturates``), so exporting
    them there warns and records what this CPU computes.
    """
    check_choice(fmt, FORMATS, "--format")
    check_choice(quantize, QUANTIZATIONS, "--quantize")
    model, tokenizer, info = load_pruned_model(model_dir, trust_pickle=trust_pickle)
    model.eval()
    graph_model = full_output_rows(model)  # what the graph computes, Linear by Linear
    kept = fp32_linears(graph_model, keep_fp32) if quantize else []  # a bad selector fails before any work
    qat = (info or {}).get("qat")
    if quantize and qat and (qat["per_channel"] != per_channel or sorted(qat["keep_fp32"]) != sorted(keep_fp32)
                             or qat.get("reduce_range", False) != reduce_range):
        log(f"warning: this model was fine-tuned for int8 {'per channel' if qat['per_channel'] else 'per tensor'} "
            f"{'with' if qat.get('reduce_range') else 'without'} --reduce-range, with --keep-fp32 "
            f"{' '.join(qat['keep_fp32'])}; exporting it otherwise loses what that fine-tune bought")
    saturates = bool(quantize) and not reduce_range and int8_saturates()
    if saturates:
        log(f"warning: this CPU ({instruction_set()}, no VNNI) clips ONNX Runtime's full-range int8 products, so the "
            "int8 scores below are this CPU's, not a VNNI / AMX CPU's; --reduce-range exports weights every CPU "
            "multiplies exactly")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    batches = check_inputs(tokenizer, model)
    onnx_path = export_onnx(graph_model, batches[0], out / ONNX_FILE)
    tokenizer.save_pretrained(out)
    parity = compare(model, session(onnx_path), batches)
    if not parity["max_abs_diff"] <= tolerance or parity["predictions_agree"] != parity["examples"]:
        raise ExportError(
            f"ONNX Runtime's logits differ from PyTorch's by {parity['max_abs_diff']:.2e} (tolerance {tolerance:g}; "
            f"{parity['predictions_agree']} of {parity['examples']} predictions agree) on the check sentences.",
            "do not deploy this file; report the model's config.json with this message")
    log(f"exported {onnx_path} ({onnx_path.stat().st_size / 1e6:.1f} MB); ONNX Runtime vs PyTorch on "
        f"{parity['examples']} sentences: max abs diff {parity['max_abs_diff']:.2e}")
    import onnx
    import onnxruntime

    from ..core.targets import resolve_targets

    linears = linear_initializers(onnx.load(str(onnx_path)).graph, graph_model)
    record: dict[str, Any] = {
        "pruneformer_version": __version__, "source": str(model_dir), "format": "onnx", "opset": OPSET,
        "files": {"fp32": ONNX_FILE}, "inputs": list(batches[0]), "dynamic_axes": {"0": "batch", "1": "sequence"},
        "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__,
        "model_type": model.config.model_type, "num_labels": model.config.num_labels,
        "id2label": {str(k): v for k, v in (model.config.id2label or {}).items()},
        "pruning": info, "check": {"tolerance": tolerance, "fp32": parity},
        "session": {"disabled_optimizers": list(DISABLED_FUSIONS),
                    "why": "ONNX Runtime's fused SkipLayerNormalization CPU kernel is slower than Add + LayerNormalization"},
    }
    weights = {ONNX_FILE: {name: (init, transposed, "fp32") for name, (init, transposed) in linears.items()}}
    dev_split, metrics = dev(tokenizer) if dev is not None else (None, ())
    if dev_split is not None:
        record["check"]["fp32_dev"] = compare(model, session(onnx_path), split_batches(dev_split, tokenizer))
    if quantize:
        stats = quantize_int8(onnx_path, out / INT8_FILE, graph_model, kept,
                              lambda path: compare(model, session(path), batches), tolerance, per_channel,
                              reduce_range)
        stats["per_channel"] = per_channel
        stats["reduce_range"] = reduce_range
        stats["exact_on"] = "every CPU" if reduce_range else "CPUs with VNNI or AMX"
        stats["saturated_here"] = saturates
        stats["keep_fp32"] = list(keep_fp32)
        stats["int8_check"] = compare(model, session(out / INT8_FILE), batches)
        if dev_split is not None:
            stats["dev"] = {"fp32": score(onnx_path, dev_split, tokenizer, metrics),
                            "int8": score(out / INT8_FILE, dev_split, tokenizer, metrics)}
        record["files"]["int8"] = INT8_FILE
        weights[INT8_FILE] = stats.pop("weights")
        stats["linears"] = {name: {"initializer": init, "transposed": transposed, "dtype": dtype}
                            for name, (init, transposed, dtype) in sorted(weights[INT8_FILE].items())}
        scheme = ("per channel" if per_channel else "per tensor") + (", range [-64, 64]" if reduce_range else "")
        record["quantization"] = {"type": f"dynamic int8 (weights QInt8 {scheme}, activations uint8)", **stats}
        (out / QUANTIZATION_FILE).write_text(json.dumps(record["quantization"], indent=2))
        log(f"quantized {out / INT8_FILE} ({(out / INT8_FILE).stat().st_size / 1e6:.1f} MB); fusions "
            f"{stats['fusions']}; dev {stats.get('dev', 'not scored')}")
    # where each targeted Linear's weight is, per file: what `pruneformer inspect` reads
    record["layers"] = [{"layer": t.name, "role": t.role,
                         "weights": {f: {"initializer": w[t.name][0], "transposed": w[t.name][1], "dtype": w[t.name][2]}
                                     for f, w in weights.items() if t.name in w}}
                        for t in resolve_targets(graph_model) if t.name in linears]
    record["wall_time_s"] = time.perf_counter() - started
    (out / EXPORT_FILE).write_text(json.dumps(record, indent=2))
    return record


