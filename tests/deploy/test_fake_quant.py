"""The int8 simulation of quantization-aware fine-tuning against ONNX Runtime's own int8: the same numbers,
weights left on the grid the export stores, straight-through gradients, the export's layer selectors.

The simulation computes int8 exactly. ONNX Runtime does so in the reduced range on every CPU, and in the full
range on CPUs with VNNI or AMX; a CPU without VNNI clips full-range products (``hardware.int8_saturates``), and
there the tests assert that the clipping shows instead. Both branches assert values, so every CPU runs them."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from pruneformer.compress import shrink_model
from pruneformer.core.structure import LayerPlan
from pruneformer.deploy.export import export_model
from pruneformer.deploy.fake_quant import quantize_activation, quantize_weight, simulate_int8
from pruneformer.deploy.hardware import int8_saturates
from pruneformer.deploy.runtime import session
from pruneformer.errors import ExportError
from pruneformer.models.saved import load_pruned_model, save_shrunk_model

PLANS = [LayerPlan(heads=[0, 2, 3], ffn_units=list(range(0, 128, 2)), attn_out_rows=list(range(48)),
                   ffn_out_rows=list(range(16, 64))),
         LayerPlan(heads=[1], ffn_units=list(range(32)))]
SENTENCES = ["a small test sentence here", "another one that is a bit longer than the first", "good"]


@pytest.fixture(scope="module")
def shrunk_dir(tiny_model_dir, tmp_path_factory):
    """A shrunk tiny BERT with weights large enough that int8 visibly changes its logits."""
    model, tokenizer, _ = load_pruned_model(tiny_model_dir)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.normal_(0, 0.3, generator=torch.Generator().manual_seed(len(name)))
    return save_shrunk_model(shrink_model(copy.deepcopy(model), PLANS), tokenizer,
                             tmp_path_factory.mktemp("qat") / "shrunk", {"method": "l1-structured", "pattern": None})


def _logits(model, batch) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(**batch).logits.numpy()


def assert_as_onnx_runtime_computes(simulated: np.ndarray, deployed: np.ndarray, reduce_range: bool) -> None:
    """Exact int8 equals ONNX Runtime's wherever its kernel is exact; where it clips, the clipping must show."""
    gap = np.abs(simulated - deployed).max()
    if reduce_range or not int8_saturates():
        assert gap <= 1e-5
    else:  # measured 0.094 on a 2-core AVX2 EPYC (ONNX Runtime 1.32)
        assert gap > 1e-3


@pytest.mark.parametrize("per_channel,reduce_range", [(True, False), (False, False), (True, True), (False, True)])
def test_simulation_computes_what_onnx_runtime_int8_computes(shrunk_dir, tmp_path, per_channel, reduce_range):
    export_model(shrunk_dir, tmp_path, quantize="int8", per_channel=per_channel, reduce_range=reduce_range,
                 log=lambda line: None)
    model, tokenizer, _ = load_pruned_model(shrunk_dir)
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    ort = session(tmp_path / "model.int8.onnx")
    deployed = ort.run(None, {i.name: batch[i.name].numpy() for i in ort.get_inputs()})[0]
    fp32 = _logits(model, batch)
    simulation = simulate_int8(model, per_channel=per_channel, reduce_range=reduce_range)
    simulated = _logits(model, batch)
    assert np.abs(fp32 - deployed).max() > 3e-3  # int8 changes these logits ...
    assert_as_onnx_runtime_computes(simulated, deployed, reduce_range)  # ... and the simulation the same way
    assert simulation.fp32 == ["classifier"] and "classifier" not in simulation.linears
    assert simulation.summary()["int8_linears"] == len(simulation.linears) == 13  # 2 x 6 encoder + pooler
    assert simulation.summary()["reduce_range"] is reduce_range


@pytest.mark.parametrize("reduce_range,levels", [(False, 127), (True, 64)])
def test_remove_leaves_weights_on_the_grid_the_export_stores(shrunk_dir, tmp_path, reduce_range, levels):
    import onnx
    from onnx import numpy_helper

    model, tokenizer, info = load_pruned_model(shrunk_dir)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    simulation = simulate_int8(model, reduce_range=reduce_range)
    simulation.remove(leave_quantized=True)
    assert not any("parametrizations" in n for n, _ in model.named_parameters())
    for name in simulation.linears:
        weight = model.get_submodule(name).weight.detach()
        assert torch.equal(quantize_weight(weight, reduce_range=reduce_range), weight)  # a second rounding: no change
        step = before[f"{name}.weight"].abs().amax(1, keepdim=True) / levels
        assert ((weight - before[f"{name}.weight"]).abs() <= step / 2 + 1e-7).all()
    assert torch.equal(model.classifier.weight, before["classifier.weight"])
    saved = save_shrunk_model(model, tokenizer, tmp_path / "snapped", info)
    record = export_model(saved, tmp_path / "onnx", quantize="int8", reduce_range=reduce_range, log=lambda line: None)
    assert record["quantization"]["reduce_range"] is reduce_range
    graph = onnx.load(str(tmp_path / "onnx" / "model.int8.onnx")).graph
    stored = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    linears = record["quantization"]["linears"]
    int8 = {v["initializer"] for v in linears.values() if v["dtype"] == "int8"}
    assert sum(v["dtype"] == "int8" for v in linears.values()) == 13 and int8 <= set(stored)
    # every output column's largest weight sits at the range's end (+-127, or +-64 with reduce_range); the
    # columns of pruned output rows are zeros
    peaks = np.concatenate([np.abs(stored[n].astype(int)).max(axis=0) for n in int8])
    assert set(peaks.tolist()) == {0, levels} and (peaks == levels).mean() > 0.8
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    ort = session(tmp_path / "onnx" / "model.int8.onnx")
    deployed = ort.run(None, {i.name: batch[i.name].numpy() for i in ort.get_inputs()})[0]
    simulate_int8(model, reduce_range=reduce_range)  # the snapped weights quantize to themselves: activations round
    assert_as_onnx_runtime_computes(_logits(model, batch), deployed, reduce_range)
    other = load_pruned_model(shrunk_dir)[0]
    simulate_int8(other).remove(leave_quantized=False)
    assert all(torch.equal(p, before[n]) for n, p in other.named_parameters())


def test_rounding_values_and_straight_through_gradients():
    w = torch.tensor([[0.5, -0.25, 0.01], [2.0, 1.0, -3.0]], requires_grad=True)
    q = quantize_weight(w)
    assert q[0, 0] == 0.5 and q[1, 2] == -3.0  # each row's largest magnitude is exact (+-127 steps)
    assert torch.allclose(q[1, 1], torch.tensor(round(127 / 3) * 3 / 127))
    reduced = quantize_weight(w, reduce_range=True)  # 7 bits: 64 steps per side
    assert reduced[1, 2] == -3.0 and torch.allclose(reduced[1, 1], torch.tensor(round(64 / 3) * 3 / 64))
    assert quantize_weight(w, per_channel=False)[0, 2] == 0.0  # one scale: 0.01 < half of 3/127
    q.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))
    x = torch.linspace(-1.0, 3.0, 1000, requires_grad=True)
    qx = quantize_activation(x)
    assert len(torch.unique(qx.detach())) <= 256 and (qx.detach() == 0).any()  # 0 is exact (zero point)
    assert (qx - x).abs().max() <= 4.0 / 255 / 2 + 1e-6
    qx.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    positive = torch.tensor([1.0, 2.0, 4.0])  # the range always holds 0: [0, 4]
    assert quantize_activation(positive)[2] == 4.0
    assert torch.equal(quantize_activation(torch.zeros(3)), torch.zeros(3))


def test_keep_fp32_takes_the_exports_selectors(shrunk_dir):
    model = load_pruned_model(shrunk_dir)[0]
    simulation = simulate_int8(model, keep_fp32=["classifier", "ffn_out"])
    assert set(simulation.fp32) == {"classifier", "bert.encoder.layer.0.output.dense", "bert.encoder.layer.1.output.dense"}
    assert len(simulation.linears) == 11
    with pytest.raises(ExportError) as err:
        simulate_int8(load_pruned_model(shrunk_dir)[0], keep_fp32=["nothing_here"])
    assert "matches no Linear" in str(err.value) and "\n" not in str(err.value)


def test_a_layer_without_heads_or_units_stays_exact_in_int8(tiny_model_dir, tmp_path):
    """A layer that lost every head (or FFN unit) computes ``[batch, seq, 0] @ W[0, hidden]``: ONNX Runtime's
    int8 kernels return garbage for that empty product, so the export keeps it fp32 (zeros, the bias alone)."""
    import onnx

    model, tokenizer, _ = load_pruned_model(tiny_model_dir)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.normal_(0, 0.3, generator=torch.Generator().manual_seed(len(name)))
    plans = [LayerPlan(heads=[], ffn_units=list(range(64))), LayerPlan(heads=[1, 2], ffn_units=[])]
    saved = save_shrunk_model(shrink_model(model, plans), tokenizer, tmp_path / "empty", {"method": "l1-structured"})
    # reduced range: exact on every CPU, so only the empty products' garbage could make it differ
    export_model(saved, tmp_path / "onnx", quantize="int8", reduce_range=True, log=lambda line: None)
    graph = onnx.load(str(tmp_path / "onnx" / "model.int8.onnx")).graph
    shapes = {init.name: tuple(init.dims) for init in graph.initializer}
    integer = [n for n in graph.node if n.op_type == "MatMulInteger"]
    assert integer and not any(0 in shapes.get(n.input[1], (1,)) for n in integer)
    # kept fp32: layer 0's attention output, layer 1's FFN-in (no output column) and FFN-out (no input row)
    assert sum(n.op_type == "MatMul" and 0 in shapes.get(n.input[1], (1,)) for n in graph.node) == 3
    shrunk = load_pruned_model(saved)[0]
    simulate_int8(shrunk, reduce_range=True)
    ort = session(tmp_path / "onnx" / "model.int8.onnx")
    for size in (1, 3, 7):  # several batches: garbage would differ from run to run
        batch = tokenizer((SENTENCES * 3)[:size], padding=True, return_tensors="pt")
        deployed = ort.run(None, {i.name: batch[i.name].numpy() for i in ort.get_inputs()})[0]
        assert np.abs(_logits(shrunk, batch) - deployed).max() <= 1e-5
