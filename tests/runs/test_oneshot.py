"""One-shot pruning of decoder LMs: Wanda and SparseGPT against magnitude, exact patterns, the layer-by-layer
calibration on tiny Llama and GPT-2 configs, and ``pruneformer oneshot`` end to end."""

from __future__ import annotations

import json

import pytest
import torch
from layer_fixtures import correlated_inputs, prune_linear, reconstruction_error
from llm_fixtures import random_tokens, save_tiny_llama_dir, tiny_gpt2, tiny_llama
from typer.testing import CliRunner

from pruneformer.cli import app
from pruneformer.core.patterns import parse_pattern
from pruneformer.core.targets import resolve_targets
from pruneformer.errors import PatternError, PruneformerError
from pruneformer.methods import MagnitudePruner, SparseGPTPruner, WandaPruner
from pruneformer.models.llm import batches_of
from pruneformer.runs.oneshot import build_oneshot_method, oneshot
from pruneformer.train.calibration import prune_layerwise

PATTERNS = ["2:4", "50%", "4x4:8"]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_sparsegpt_reconstructs_a_layer_better_than_wanda_and_magnitude(pattern):
    torch.manual_seed(0)
    weight = torch.randn(32, 64)
    inputs = correlated_inputs(400, 64, seed=1)
    errors = {name: reconstruction_error(weight, prune_linear(cls(pattern), weight, inputs), inputs)
              for name, cls in (("magnitude", MagnitudePruner), ("wanda", WandaPruner), ("sparsegpt", SparseGPTPruner))}
    assert errors["sparsegpt"] < 0.9 * errors["wanda"] and errors["sparsegpt"] < 0.9 * errors["magnitude"], errors


@pytest.mark.parametrize("pattern", PATTERNS)
def test_wanda_beats_magnitude_on_a_layer_with_outlier_input_features(pattern):
    torch.manual_seed(0)
    weight = torch.randn(32, 64)
    inputs = torch.randn(400, 64)
    inputs[:, [3, 17, 40, 41]] *= 20.0  # a few features with huge activations, as in LLMs
    magnitude = reconstruction_error(weight, prune_linear(MagnitudePruner(pattern), weight, inputs), inputs)
    wanda = reconstruction_error(weight, prune_linear(WandaPruner(pattern), weight, inputs), inputs)
    assert wanda < 0.5 * magnitude, (wanda, magnitude)


def test_wanda_scores_are_magnitude_times_input_norm():
    weight = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    inputs = torch.tensor([[4.0, 0.0, 1.0, 0.1], [0.0, 0.0, 1.0, 0.1]])  # norms 4, 0, sqrt 2, 0.14
    pruned = prune_linear(WandaPruner("2:4"), weight, inputs)  # scores 4, 0, 4.24, 0.57 -> keep 0 and 2
    assert pruned.tolist() == [[1.0, 0.0, 3.0, 0.0]]


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
@pytest.mark.parametrize("pattern", ["2:4", "1:4", "4:8", "4x4:8", "50%", "30%"])
def test_masks_satisfy_the_pattern_exactly(method, pattern):
    torch.manual_seed(0)
    weight = torch.randn(24, 80)
    pruned = prune_linear(build_oneshot_method(method, pattern), weight, correlated_inputs(300, 80, seed=2))
    parsed = parse_pattern(pattern)
    stats = parsed.group_stats(pruned)
    assert stats["violating_groups"] == 0
    if parsed.kind == "unstructured":  # exactly the per-layer keep count, not merely at most
        assert int((pruned != 0).sum()) == parsed.keep_count(pruned.numel())
    else:
        assert stats["max_nonzeros_per_group"] == parsed.allowed_per_group(tuple(pruned.shape))


@pytest.mark.parametrize("cls", [WandaPruner, SparseGPTPruner])
def test_global_patterns_are_refused_by_layerwise_methods(cls):
    with pytest.raises(PatternError, match="layer by layer"):
        cls("50%:global")


def test_finalize_before_calibration_names_the_missing_step():
    model = tiny_llama()
    method = SparseGPTPruner("2:4")
    method.attach(model, resolve_targets(model))
    with pytest.raises(PruneformerError, match="calibrate first"):
        method.finalize()


def layer0_inputs(model, calibration: torch.Tensor) -> dict[str, torch.Tensor]:
    """The inputs every layer-0 target receives on the calibration blocks (dense model)."""
    seen: dict[str, list[torch.Tensor]] = {}
    targets = [t for t in resolve_targets(model) if t.layer == 0]
    handles = [t.module.register_forward_hook(
        lambda m, args, out, t=t: seen.setdefault(t.name, []).append(args[0].reshape(-1, args[0].shape[-1])))
        for t in targets]
    with torch.no_grad():
        model(input_ids=calibration)
    for h in handles:
        h.remove()
    return {name: torch.cat(parts) for name, parts in seen.items()}


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt2], ids=["llama", "gpt2"])
@pytest.mark.parametrize("pattern", ["2:4", "50%"])
def test_layerwise_calibration_on_tiny_decoders(make, pattern):
    """On the calibration inputs of layer 0, SparseGPT's reconstruction error is the lowest of the three;
    every target of every layer satisfies the pattern; methods that calibrate leave the rest untouched."""
    calibration = random_tokens(16, 16)
    dense = make()
    inputs = layer0_inputs(dense, calibration)
    dense_weights = {t.name: t.linear_weight.detach().clone() for t in resolve_targets(dense)}
    errors = {}
    for name in ("magnitude", "wanda", "sparsegpt"):
        model = make()
        untouched = model.lm_head.weight.detach().clone()
        masks = oneshot(model, build_oneshot_method(name, pattern), calibration, batch_size=5)
        targets = resolve_targets(model)
        assert set(masks) == {t.name for t in targets}
        for t in targets:
            assert parse_pattern(pattern).group_stats(t.linear_weight)["violating_groups"] == 0
            assert torch.equal(t.linear_weight != 0, masks[t.name] & (t.linear_weight != 0))
        assert torch.equal(model.lm_head.weight, untouched)
        errors[name] = sum(reconstruction_error(dense_weights[n], t.linear_weight.detach(), inputs[n])
                           for t in targets if (n := t.name) in inputs)
    assert errors["sparsegpt"] < errors["wanda"] and errors["sparsegpt"] < errors["magnitude"], errors


def test_layerwise_calibration_sees_the_pruned_outputs_of_earlier_layers():
    """Layer 1 is calibrated on what the *pruned* layer 0 produces, as in SparseGPT's and Wanda's code."""
    model = tiny_llama()
    method = WandaPruner("2:4")
    method.attach(model, resolve_targets(model))
    seen = {}
    original = method.observe

    def spy(target, inputs):
        if target.name == "model.layers.1.self_attn.q_proj":
            seen.setdefault("x", []).append(inputs.detach().clone())
        original(target, inputs)

    method.observe = spy
    calibration = random_tokens(4, 8)
    prune_layerwise(model, method, batches_of(calibration, 4))
    captured = {}
    layer1 = model.model.layers[1].self_attn.q_proj
    handle = layer1.register_forward_hook(lambda m, args, out: captured.setdefault("x", args[0].detach().clone()))
    with torch.no_grad():
        model(input_ids=calibration)  # the fully pruned model: layer 0 pruned, as during calibration
    handle.remove()
    torch.testing.assert_close(seen["x"][0], captured["x"].reshape(-1, captured["x"].shape[-1]))  # [tokens, features]


runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory):
    from conftest import VOCAB

    return save_tiny_llama_dir(tmp_path_factory.mktemp("tiny-llama"), VOCAB)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    from conftest import FILLER, GOOD

    path = tmp_path_factory.mktemp("text") / "reviews.txt"
    words = FILLER + GOOD
    path.write_text("\n".join(" ".join(words[(i + j) % len(words)] for j in range(7)) for i in range(200)) + "\n")
    return path


def test_oneshot_command_prunes_saves_and_reports(tiny_llama_dir, text_file, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    result = runner.invoke(app, ["oneshot", "--model", str(tiny_llama_dir), "--data", str(text_file),
                                 "--method", "sparsegpt", "--pattern", "2:4", "--calib-samples", "8",
                                 "--seq-len", "16", "--quiet", "-o", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["method"] == "sparsegpt" and report["pattern"] == "2:4" and report["all_layers_satisfy_pattern"]
    assert report["calibration_blocks"] == 8 and report["overall_sparsity"] == pytest.approx(0.5)
    assert report["dense"]["tokens"] == report["pruned"]["tokens"] == report["heldout_blocks"] * 15
    assert "perplexity" in result.output and (out / "report.md").is_file()

    saved = AutoModelForCausalLM.from_pretrained(out / "model")  # plain transformers loads it back
    for target in resolve_targets(saved):
        assert parse_pattern("2:4").satisfied(target.linear_weight)
    inspected = runner.invoke(app, ["inspect", str(out / "model"), "--json"])
    assert inspected.exit_code == 0, inspected.output
    assert json.loads(inspected.output)["all_layers_satisfy_pattern"] is True

    again = runner.invoke(app, ["oneshot", "--model", str(tiny_llama_dir), "--data", str(text_file), "-o", str(out)])
    assert again.exit_code == 2 and "already holds" in again.output


@pytest.mark.parametrize("args, expected", [
    (["--method", "admm"], "Recipe field 'method'"),
    (["--pattern", "50%:global", "--method", "wanda"], "layer by layer"),
    (["--pattern", "2:7"], "in_features divisible by 7"),
    (["--data", "missing.txt"], "does not exist"),
    (["--seq-len", "4"], "Recipe field 'seq_len'"),
    (["--include", "nope"], "matches no prunable layer"),
])
def test_oneshot_errors_are_one_line(tiny_llama_dir, text_file, tmp_path, args, expected):
    base = ["oneshot", "--model", str(tiny_llama_dir), "--data", str(text_file), "--quiet", "-o", str(tmp_path / "r")]
    result = runner.invoke(app, base + args)
    assert result.exit_code == 2, result.output
    assert expected in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_oneshot_refuses_an_encoder(tiny_model_dir, text_file, tmp_path):
    result = runner.invoke(app, ["oneshot", "--model", str(tiny_model_dir), "--data", str(text_file),
                                 "-o", str(tmp_path / "r")])
    assert result.exit_code == 2 and "not a supported decoder LM" in result.output
