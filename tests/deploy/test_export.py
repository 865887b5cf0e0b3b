"""ONNX export: parity with PyTorch for every kind of saved model, int8, eval/inspect of exported models,
and one-line errors on bad input. Each kind of model is exported once per session (an export takes seconds)."""

from __future__ import annotations

import copy
import json

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from pruneformer.cli import app
from pruneformer.compress import shrink_model
from pruneformer.compress.paired import extract, l1_scores
from pruneformer.core.structure import LayerPlan
from pruneformer.core.targets import resolve_targets
from pruneformer.deploy.export import export_model, full_output_rows
from pruneformer.deploy.runtime import exported_weights, load_onnx_classifier, node_kernel_times, session
from pruneformer.errors import ExportError
from pruneformer.methods import MagnitudePruner
from pruneformer.methods.spp.cut import keep_top
from pruneformer.models.saved import load_pruned_model, save_pruned_model, save_shrunk_model

runner = CliRunner()
KINDS = ["dense", "2:4", "shrunk", "spp"]
#: Per-layer plans of a tiny 2-layer BERT (4 heads of 16, FFN 128) like MLPruning / L1 leave them: a
#: different head count, FFN width and kept output rows in every layer.
PLANS = [LayerPlan(heads=[0, 2, 3], ffn_units=list(range(0, 128, 2)), attn_out_rows=list(range(48)),
                   ffn_out_rows=list(range(16, 64))),
         LayerPlan(heads=[1], ffn_units=list(range(32)))]


@pytest.fixture(scope="module")
def saved(tiny_model_dir, tmp_path_factory) -> dict[str, object]:
    """The four kinds of model pruneformer saves, each in its own directory, from the tiny BERT."""
    root = tmp_path_factory.mktemp("saved")
    model, tokenizer, _ = load_pruned_model(tiny_model_dir)
    with torch.no_grad():  # non-zero biases make the shrunk models' bias folding matter
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(0, 0.2, generator=torch.Generator().manual_seed(len(name)))
    dirs = {"dense": save_pruned_model(model, tokenizer, root / "dense", {"method": "dense", "pattern": None})}
    nm = copy.deepcopy(model)
    pruner = MagnitudePruner("2:4")
    pruner.attach(nm, resolve_targets(nm))
    pruner.finalize()
    dirs["2:4"] = save_pruned_model(nm, tokenizer, root / "nm", {"method": "magnitude", "pattern": "2:4",
                                                                 "targets": pruner.names})
    dirs["shrunk"] = save_shrunk_model(shrink_model(copy.deepcopy(model), PLANS), tokenizer, root / "shrunk",
                                       {"method": "mlpruning", "pattern": None})
    cut = extract(model, keep_top(l1_scores(model), 0.5))  # qk and vo widths differ per layer
    dirs["spp"] = save_shrunk_model(cut, tokenizer, root / "spp", {"method": "spp", "pattern": None, "ratio": 0.5})
    return dirs


@pytest.fixture(scope="module")
def exported(saved, tiny_task, tmp_path_factory):
    """kind -> (export directory, its record); the shrunk model is also quantized to int8 (classifier and
    FFN-out kept in fp32) and scored on the tiny task's dev split."""
    root = tmp_path_factory.mktemp("exported")
    dev = dev_split(tiny_task)
    return {kind: (root / kind.replace(":", "x"), export_model(
        saved[kind], root / kind.replace(":", "x"), log=lambda _: None,
        **({"quantize": "int8", "keep_fp32": ["classifier", "ffn_out"], "dev": dev} if kind == "shrunk" else {})))
        for kind in KINDS}


def dev_split(tiny_task):
    from pruneformer.data import tokenize_bundle
    from pruneformer.runs.engine import prepare_data
    from pruneformer.runs.recipe import DataConfig

    config = DataConfig(source=str(tiny_task["train"]), dev_file=str(tiny_task["dev"]), max_length=16)
    return lambda tokenizer: (tokenize_bundle(prepare_data(config, 0), tokenizer, 16).dev, ["accuracy"])


def random_batch(seed: int, size: int, length: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 29, (size, length), generator=generator)  # the tiny vocabulary
    mask = torch.ones_like(ids)
    mask[0, length // 2:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


@pytest.mark.parametrize("kind", KINDS)
def test_onnx_runtime_matches_pytorch(kind, saved, exported):
    directory, record = exported[kind]
    check = record["check"]["fp32"]
    assert check["max_abs_diff"] < 1e-4 and check["predictions_agree"] == check["examples"] == 9
    graph = onnx.load(str(directory / "model.onnx")).graph
    assert [(i.name, [d.dim_param for d in i.type.tensor_type.shape.dim]) for i in graph.input] == [
        (name, ["batch", "sequence"]) for name in ("input_ids", "attention_mask", "token_type_ids")]
    # one fused attention per layer, fed [batch, sequence, heads * width] (no transposes to 4-D and back)
    assert [n.op_type for n in graph.node].count("Attention") == 2 and "Transpose" not in {n.op_type for n in graph.node}
    model = load_pruned_model(saved[kind])[0].eval()
    sess = session(directory / "model.onnx")
    for seed, size, length in ((1, 3, 7), (2, 5, 30), (3, 1, 2)):  # other batch sizes and lengths than exported
        batch = random_batch(seed, size, length)
        with torch.no_grad():
            expected = model(**batch).logits.numpy()
        got = sess.run(None, {k: v.numpy() for k, v in batch.items()})[0]
        assert np.abs(got - expected).max() < 1e-4
        assert (got.argmax(-1) == expected.argmax(-1)).all()
    assert (directory / "tokenizer.json").is_file() or (directory / "vocab.txt").is_file()


def test_profiled_session_traces_every_node(exported, tmp_path, monkeypatch):
    """``session(profile=True)`` (benchmarks/int8_floor.py) records kernel times per node, outside the cwd."""
    monkeypatch.chdir(tmp_path)
    directory, _ = exported["shrunk"]
    sess = session(directory / "model.int8.onnx", threads=1, profile=True)
    batch = random_batch(4, 2, 9)
    sess.run(None, {k: v.numpy() for k, v in batch.items()})
    events = node_kernel_times(sess)
    assert not list(tmp_path.iterdir())
    ops = [op for op, _ in events]
    assert ops.count("Attention") == 2 and {"MatMulIntegerToFloat", "DynamicQuantizeMatMul"} & set(ops)
    assert all(us >= 0 for _, us in events)


def test_int8_quantization_keeps_chosen_layers_in_fp32(saved, exported):
    directory, record = exported["shrunk"]
    q = record["quantization"]
    assert json.loads((directory / "quantization.json").read_text()) == q
    assert q["fused_fp32_check"]["max_abs_diff"] < 1e-4
    assert q["int8_check"]["max_abs_diff"] < 0.1 and q["int8_check"]["predictions_agree"] >= 8
    assert set(q["dev"]) == {"fp32", "int8"} and abs(q["dev"]["fp32"]["accuracy"] - q["dev"]["int8"]["accuracy"]) <= 0.1
    assert q["fp32_linears"] == ["bert.encoder.layer.0.output.dense", "bert.encoder.layer.1.output.dense",
                                 "classifier"]
    assert q["int8_linears"] == sorted([f"bert.encoder.layer.{i}.{m}" for i in (0, 1) for m in (
        "attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
        "intermediate.dense")] + ["bert.pooler.dense"])
    assert_record_matches_graph(directory / "model.int8.onnx", q, load_pruned_model(saved["shrunk"])[0])
    model = full_output_rows(load_pruned_model(saved["shrunk"])[0])  # kept output rows: zero rows in the graph
    for name, role, weight in exported_weights(directory / "model.int8.onnx")[0]:
        if role == "ffn_out":  # kept: the exact fp32 weight
            assert torch.equal(weight, model.get_submodule(name).weight.detach())
        else:  # int8 values
            assert torch.equal(weight, weight.round()) and weight.abs().max() <= 127
    classifier, tokenizer, _ = load_onnx_classifier(directory / "model.int8.onnx")
    logits = classifier(**random_batch(4, 4, 9)).logits
    assert logits.shape == (4, 2) and torch.isfinite(logits).all()


#: ONNX ops whose second input is a Linear's weight (fp32: MatMul, Gemm; int8: what quantize_dynamic makes).
WEIGHT_OPS = ("MatMul", "Gemm", "MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat")


def assert_record_matches_graph(path, record: dict, model) -> None:
    """Every Linear's weight as the quantized graph itself stores it, against the record: the graph's weight
    inputs are exactly the recorded initializers, each of the recorded dtype, and an fp32 one holds the
    Linear's exact weight (an int8 one its weight to within half a quantization step)."""
    from onnx import TensorProto, numpy_helper

    graph = onnx.load(str(path)).graph
    inits = {i.name: i for i in graph.initializer}
    weight_inputs = {n.input[1] for n in graph.node if n.op_type in WEIGHT_OPS and n.input[1] in inits}
    linears = {name: m for name, m in full_output_rows(model).named_modules() if isinstance(m, torch.nn.Linear)}
    assert set(record["linears"]) == set(linears)
    assert {r["initializer"] for r in record["linears"].values()} == weight_inputs
    assert sorted(n for n, r in record["linears"].items() if r["dtype"] == "int8") == record["int8_linears"]
    assert sorted(n for n, r in record["linears"].items() if r["dtype"] == "fp32") == record["fp32_linears"]
    for name, entry in record["linears"].items():
        init = inits[entry["initializer"]]
        stored = numpy_helper.to_array(init).astype(np.float64)
        weight = linears[name].weight.detach().numpy().astype(np.float64)
        weight = weight.T if entry["transposed"] else weight
        if entry["dtype"] == "fp32":
            assert init.data_type == TensorProto.FLOAT and np.array_equal(stored, weight), name
        else:
            assert init.data_type == TensorProto.INT8, name
            scale = numpy_helper.to_array(inits[entry["initializer"].removesuffix("_quantized") + "_scale"])
            scale = scale.astype(np.float64).reshape((1, -1) if entry["transposed"] else (-1, 1)) if scale.size > 1 \
                else float(scale)  # per channel (the default): one scale per output feature
            assert np.all(np.abs(stored * scale - weight) <= 0.5 * scale * (1 + 1e-5)), name


@pytest.mark.parametrize("keep", [["none"], ["classifier", "pooler", "value"]])
def test_int8_record_says_what_the_graph_stores(saved, tmp_path, keep):
    """With no layer kept in fp32 every Linear (Gemm-built pooler and classifier included) is int8 in the
    graph; with some kept, exactly those are fp32 there."""
    record = export_model(saved["dense"], tmp_path, quantize="int8", keep_fp32=keep, log=lambda _: None)["quantization"]
    model = load_pruned_model(saved["dense"])[0]
    assert_record_matches_graph(tmp_path / "model.int8.onnx", record, model)
    want_fp32 = [] if keep == ["none"] else ["bert.encoder.layer.0.attention.self.value",
                                            "bert.encoder.layer.1.attention.self.value", "bert.pooler.dense", "classifier"]
    assert record["fp32_linears"] == want_fp32 and len(record["int8_linears"]) == 2 * 6 + 2 - len(want_fp32)


def test_eval_and_inspect_accept_exported_models(saved, exported, tiny_task):
    data = ["--data", str(tiny_task["train"]), "--dev-file", str(tiny_task["dev"]), "--max-length", "16"]
    scores = {}
    for name, path in (("pytorch", saved["shrunk"]), ("onnx", exported["shrunk"][0]),
                       ("int8", exported["shrunk"][0] / "model.int8.onnx")):
        result = runner.invoke(app, ["eval", str(path), *data])
        assert result.exit_code == 0, result.output
        scores[name] = json.loads(result.output)
    assert scores["onnx"]["accuracy"] == scores["pytorch"]["accuracy"]  # every prediction agrees
    assert scores["int8"]["accuracy"] == exported["shrunk"][1]["quantization"]["dev"]["int8"]["accuracy"]

    for path in (exported["2:4"][0], exported["2:4"][0] / "model.onnx"):
        result = runner.invoke(app, ["inspect", str(path), "--json"])
        assert result.exit_code == 0, result.output
        payload = json.loads(result.output)
        assert payload["pattern"] == "2:4" and payload["all_layers_satisfy_pattern"] is True
        assert len(payload["layers"]) == 12 and all(r["sparsity"] == pytest.approx(0.5) for r in payload["layers"])
    shrunk = json.loads(runner.invoke(app, ["inspect", str(exported["shrunk"][0]), "--json"]).output)
    assert [r["shape"] for r in shrunk["layers"] if r["role"] == "query"] == [[48, 64], [16, 64]]
    # layer 0 keeps 48 of 64 FFN-out rows: the graph stores the full matrix, the removed rows as zeros
    ffn_out = [r for r in shrunk["layers"] if r["role"] == "ffn_out"]
    assert ffn_out[0]["shape"] == [64, 64] and ffn_out[0]["sparsity"] == pytest.approx(16 / 64)


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Fix:" in lines[0], result.output
    return lines[0]


def test_bad_input_gives_one_line(saved, exported, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no config.json" in one_line_error(runner.invoke(app, ["export", str(empty), "-o", str(tmp_path / "o")]))
    not_a_model = tmp_path / "resnet"
    not_a_model.mkdir()
    (not_a_model / "config.json").write_text('{"model_type": "resnet"}')
    assert "resnet" in one_line_error(runner.invoke(app, ["export", str(not_a_model), "-o", str(tmp_path / "o")]))
    assert "--quantize 'int4'" in one_line_error(runner.invoke(
        app, ["export", str(saved["dense"]), "-o", str(tmp_path / "o"), "--quantize", "int4"]))
    assert "--format 'tflite'" in one_line_error(runner.invoke(
        app, ["export", str(saved["dense"]), "-o", str(tmp_path / "o"), "--format", "tflite"]))
    assert "nosuchlayer" in one_line_error(runner.invoke(
        app, ["export", str(saved["dense"]), "-o", str(tmp_path / "o"), "--quantize", "int8", "--keep-fp32", "nosuchlayer"]))
    assert not (tmp_path / "o").exists()  # refused before anything was written

    # an ONNX file whose inputs are not what the tokenizer beside it produces
    from onnx import TensorProto, helper

    node = helper.make_node("ReduceMean", ["pixel_values"], ["logits"], axes=[2, 3], keepdims=0)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["b", 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 3])])
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(wrong / "model.onnx"))
    load_pruned_model(saved["dense"])[1].save_pretrained(wrong)
    line = one_line_error(runner.invoke(app, ["eval", str(wrong)]))
    assert "pixel_values" in line and "do not match the tokenizer" in line
    with pytest.raises(ExportError, match="do not match the tokenizer"):
        load_onnx_classifier(wrong / "model.onnx")
    line = one_line_error(runner.invoke(app, ["inspect", str(wrong)]))
    assert "export.json" in line


def test_per_channel_int8_has_one_scale_per_output_and_is_recorded(saved, tmp_path):
    """``--per-channel``: each int8 weight carries one scale per output feature, the record still finds every
    Linear in the graph, and each column dequantizes to its weights within half its own step."""
    from onnx import numpy_helper

    record = export_model(saved["dense"], tmp_path, quantize="int8", per_channel=True, log=lambda _: None)
    quantization = record["quantization"]
    assert quantization["per_channel"] is True and len(quantization["int8_linears"]) == 2 * 6 + 1
    inits = {i.name: i for i in onnx.load(str(tmp_path / "model.int8.onnx")).graph.initializer}
    linears = {n: m for n, m in load_pruned_model(saved["dense"])[0].named_modules() if isinstance(m, torch.nn.Linear)}
    for name in quantization["int8_linears"]:
        entry = quantization["linears"][name]
        stored = numpy_helper.to_array(inits[entry["initializer"]]).astype(np.float64)
        scale = numpy_helper.to_array(inits[entry["initializer"].removesuffix("_quantized") + "_scale"]).astype(np.float64)
        weight = linears[name].weight.detach().numpy().astype(np.float64)
        weight = weight.T if entry["transposed"] else weight
        assert scale.size == linears[name].out_features > 1
        per_column = scale.reshape(1, -1) if entry["transposed"] else scale.reshape(-1, 1)
        assert np.all(np.abs(stored * per_column - weight) <= 0.5 * per_column * (1 + 1e-5)), name


def test_keep_fp32_by_role_skips_linears_a_cut_left_without_rows():
    """A layer whose heads were all cut keeps a query Linear with no row: nothing in the graph to keep fp32."""
    from family_fixtures import tiny_family_model

    from pruneformer.compress import shrink_model
    from pruneformer.core.structure import LayerPlan
    from pruneformer.deploy.quantize import fp32_linears

    shrunk = shrink_model(tiny_family_model("bert"), [LayerPlan(heads=[]), LayerPlan()])
    assert fp32_linears(shrunk, ["query"]) == ["bert.encoder.layer.1.attention.self.query"]


def test_reduce_range_export_from_the_command_line(saved, tmp_path):
    """``--reduce-range`` stores weights in [-64, 64] and records that every CPU computes them exactly; the
    full-range export warns where this CPU's int8 clips (``hardware.int8_saturates``) and records it."""
    from pruneformer.deploy.hardware import int8_saturates

    reduced = runner.invoke(app, ["export", str(saved["dense"]), "-o", str(tmp_path / "r"), "--quantize", "int8",
                                  "--reduce-range"])
    assert reduced.exit_code == 0, reduced.output
    record = json.loads((tmp_path / "r" / "quantization.json").read_text())
    assert record["reduce_range"] is True and record["exact_on"] == "every CPU" and record["saturated_here"] is False
    assert "range [-64, 64]" in record["type"] and "warning" not in reduced.output
    full = runner.invoke(app, ["export", str(saved["dense"]), "-o", str(tmp_path / "f"), "--quantize", "int8"])
    assert full.exit_code == 0, full.output
    record = json.loads((tmp_path / "f" / "quantization.json").read_text())
    assert record["reduce_range"] is False and record["saturated_here"] is int8_saturates()
    assert ("warning: this CPU" in full.output) is int8_saturates()
