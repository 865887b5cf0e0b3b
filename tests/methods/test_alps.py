"""ALPS, the layer-wise ADMM one-shot method: reconstruction against SparseGPT, magnitude and the exact optimum,
exact patterns (4:8 is 4:8, not 2:4), padding kept out of the Gram matrix, and ``prune --method alps-retrain``
on a tiny BERT end to end."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from layer_fixtures import correlated_inputs, prune_linear, reconstruction_error

from pruneformer.core.patterns import parse_pattern
from pruneformer.core.targets import resolve_targets
from pruneformer.methods import ALPSPruner, MagnitudePruner, SparseGPTPruner
from pruneformer.methods.alps import refit_on_support, relative_error
from pruneformer.train.calibration import prune_layerwise


@pytest.mark.parametrize("pattern", ["2:4", "4:8"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_alps_reconstructs_better_than_sparsegpt_and_magnitude(pattern, seed):
    torch.manual_seed(seed)
    weight = torch.randn(32, 64)
    inputs = correlated_inputs(400, 64, seed=seed + 10)
    errors = {name: reconstruction_error(weight, prune_linear(cls(pattern), weight, inputs), inputs)
              for name, cls in (("magnitude", MagnitudePruner), ("sparsegpt", SparseGPTPruner), ("alps", ALPSPruner))}
    assert errors["alps"] < 0.95 * errors["sparsegpt"] < 0.95 * errors["magnitude"], errors


def optimal_2of4(weight: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
    """The exact 2:4 optimum of ``tr((W - W0) H (W - W0)^T)``: every mask of every row, each least-squares fitted."""
    out_features, in_features = weight.shape
    h = gram.double()
    groups = [list(itertools.combinations(range(g, g + 4), 2)) for g in range(0, in_features, 4)]
    best = torch.zeros_like(weight, dtype=torch.float64)
    for row in range(out_features):
        w0 = weight[row].double()
        lowest = None
        for choice in itertools.product(*groups):
            keep = [j for pair in choice for j in pair]
            fitted = torch.zeros(in_features, dtype=torch.float64)
            fitted[keep] = torch.linalg.solve(h[keep][:, keep], (h @ w0)[keep])
            error = float((fitted - w0) @ h @ (fitted - w0))
            if lowest is None or error < lowest:
                lowest, best[row] = error, fitted
    return best.float()


@pytest.mark.parametrize("seed", range(4))
def test_alps_is_within_a_stated_factor_of_the_exact_2of4_optimum(seed):
    """Small enough to enumerate all 6^3 masks per row. Measured: 1.03x-1.14x the optimum (SparseGPT 2.5x-7x)."""
    g = torch.Generator().manual_seed(seed)
    inputs = (torch.randn(64, 4, generator=g) @ torch.randn(4, 12, generator=g) + 0.5 * torch.randn(64, 12, generator=g))
    inputs = inputs * (2 * torch.rand(12, generator=g) + 0.2)
    weight = torch.randn(16, 12, generator=g)
    gram = inputs.t() @ inputs
    alps = ALPSPruner("2:4", dampening=0.0, compare=False)
    pruned, mask = alps.solve(weight, gram.clone(), len(inputs))
    optimum = relative_error(optimal_2of4(weight, gram), weight, gram)
    found = relative_error(pruned.masked_fill(~mask, 0), weight, gram)
    assert optimum <= found <= 1.25 * optimum, (found, optimum)


@pytest.mark.parametrize("spec", ["2:4", "1:4", "4:8", "2:8", "4x4:8", "50%", "70%"])
def test_alps_masks_satisfy_the_pattern_exactly(spec):
    torch.manual_seed(0)
    weight = torch.randn(32, 64)
    pruned = prune_linear(ALPSPruner(spec), weight, correlated_inputs(300, 64, seed=3))
    pattern = parse_pattern(spec)
    assert pattern.satisfied(pruned)
    if pattern.kind == "unstructured":
        assert int((pruned == 0).sum()) == weight.numel() - pattern.allowed_per_group(tuple(weight.shape))


def test_4of8_is_really_4of8_not_2of4():
    """Pitfall of the reference code: N:M hard-coded to 2:4. A 4:8 solution keeps 4 per group of 8, and on
    inputs with a few loud features it uses the freedom 2:4 lacks (halves of a group with 3 or 4 kept)."""
    torch.manual_seed(0)
    weight = torch.randn(64, 64)
    inputs = correlated_inputs(400, 64, seed=4)
    inputs[:, ::8] *= 8.0
    pruned = prune_linear(ALPSPruner("4:8"), weight, inputs)
    per_eight = (pruned != 0).reshape(64, 8, 8).sum(-1)
    per_four = (pruned != 0).reshape(64, 16, 4).sum(-1)
    assert bool((per_eight == 4).all())
    assert int((per_four != 2).sum()) > 0
    assert not parse_pattern("2:4").satisfied(pruned)


def test_refit_reaches_the_least_squares_optimum_on_a_fixed_support():
    torch.manual_seed(0)
    inputs = correlated_inputs(200, 16, seed=5)
    gram = inputs.t() @ inputs
    weight = torch.randn(4, 16)
    mask = parse_pattern("2:4").mask(torch.rand(4, 16))
    fitted = refit_on_support(gram, weight @ gram, torch.zeros_like(weight), mask, iterations=100, rtol=1e-7)
    for row in range(4):
        keep = mask[row].nonzero().squeeze(1)
        exact = torch.linalg.solve(gram.double()[keep][:, keep], (gram.double() @ weight[row].double())[keep])
        assert torch.allclose(fitted[row, keep].double(), exact, rtol=1e-3, atol=1e-4)
        assert bool((fitted[row, ~mask[row]] == 0).all())


def test_alps_records_per_layer_diagnostics():
    torch.manual_seed(0)
    weight = torch.randn(16, 32)
    alps = ALPSPruner("2:4")
    prune_linear(alps, weight, correlated_inputs(200, 32, seed=6))
    (row,) = alps.history
    assert row["layer"] == "layer" and row["tokens"] == 200 and 1 <= row["iterations"] <= 300
    assert 0 <= row["error"] < row["sparsegpt_error"] < row["magnitude_error"] <= 1


def test_padding_never_enters_the_gram_matrix(tiny_model_dir):
    """The Gram matrix from one padded batch equals the sum of the Grams of each sentence run alone."""
    from pruneformer.models.loading import load_classifier

    model, _tokenizer = load_classifier(str(tiny_model_dir), 2)
    model.eval()
    g = torch.Generator().manual_seed(0)
    lengths = [5, 12, 8]
    ids = torch.zeros(3, 12, dtype=torch.long)
    mask = torch.zeros(3, 12, dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(5, model.config.vocab_size, (n,), generator=g)
        mask[row, :n] = 1

    def grams(batches):
        method = SparseGPTPruner("2:4")
        method.attach(model, resolve_targets(model))
        seen = {}
        method.prune_target = lambda target: seen.setdefault(target.name, (method._stats[target.name].clone(),
                                                                           method._tokens[target.name]))
        method.finalize = lambda: {}
        prune_layerwise(model, method, batches)
        return seen

    padded = grams([{"input_ids": ids, "attention_mask": mask}])
    alone = grams([{"input_ids": ids[r:r + 1, :n], "attention_mask": mask[r:r + 1, :n]} for r, n in enumerate(lengths)])
    assert padded.keys() == alone.keys() and len(padded) > 0
    for name, (gram, tokens) in padded.items():
        assert tokens == sum(lengths) == alone[name][1]
        assert torch.allclose(gram, alone[name][0], rtol=1e-4, atol=1e-4), name


@pytest.mark.integration
@pytest.mark.parametrize("method", ["alps", "alps-retrain", "sparsegpt-retrain"])
def test_prune_runs_calibrated_one_shot_methods_on_an_encoder(tiny_recipe, method):
    from pruneformer.runs.pipeline import run

    recipe = tiny_recipe(prune={"method": method, "pattern": "2:4", "epochs": 1.0, "lr": 1e-3},
                         calibration={"samples": 48, "batch_size": 16}, dense={"epochs": 2.0, "lr": 1e-3})
    report = run(recipe, progress=False, log=lambda line: None)
    assert report["all_layers_satisfy_pattern"] is True
    phases = {p["name"]: p for p in report["phases"]}
    oneshot = next(p for name, p in phases.items() if name.startswith("phase0-"))
    assert oneshot["steps"] == 0 and len(oneshot["method_history"]) == (len(report["layers"]) if method != "sparsegpt-retrain" else 0)
    if method.startswith("alps"):
        assert all(r["error"] < r["magnitude_error"] for r in oneshot["method_history"])
    if method.endswith("-retrain"):
        assert phases["phase1-masked"]["steps"] > 0
    saved = json.loads((Path(recipe.output_dir) / "report.json").read_text())
    assert saved["pruned"]["dev"]["accuracy"] == report["pruned"]["dev"]["accuracy"]


@pytest.mark.integration
def test_oneshot_command_runs_alps_on_a_decoder_and_keeps_its_diagnostics_on_resume(tmp_path):
    from conftest import FILLER, GOOD, VOCAB
    from llm_fixtures import save_tiny_llama_dir
    from typer.testing import CliRunner

    from pruneformer.cli import app

    model_dir = save_tiny_llama_dir(tmp_path / "llama", VOCAB)
    text = tmp_path / "reviews.txt"
    words = FILLER + GOOD
    text.write_text("\n".join(" ".join(words[(i + j) % len(words)] for j in range(7)) for i in range(200)) + "\n")
    out = tmp_path / "run"
    args = ["oneshot", "--model", str(model_dir), "--data", str(text), "--method", "alps", "--pattern", "4:8",
            "--calib-samples", "8", "--seq-len", "16", "--quiet", "-o", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["all_layers_satisfy_pattern"] and report["overall_sparsity"] == pytest.approx(0.5)
    diagnostics = report["layer_diagnostics"]
    assert [row["layer"] for row in diagnostics] == [row["layer"] for row in report["layers"]]
    assert all(row["error"] <= row["magnitude_error"] for row in diagnostics)

    (out / "report.json").unlink()  # as if interrupted after the prune stage
    again = CliRunner().invoke(app, args + ["--resume"])
    assert again.exit_code == 0, again.output
    assert json.loads((out / "report.json").read_text())["layer_diagnostics"] == diagnostics


@pytest.mark.integration
def test_compare_runs_calibrated_candidates(tiny_model_dir, tiny_task, tmp_path):
    """``compare alps:2:4 alps-retrain:2:4`` trains them on the shared dense model like any other candidate."""
    from pruneformer.cli.app import recipe_overrides
    from pruneformer.compare.flow import compare
    from pruneformer.runs.recipe import load_recipe

    out = tmp_path / "cmp"
    recipe = load_recipe(None, recipe_overrides(
        model=str(tiny_model_dir), data=str(tiny_task["train"]), dev_file=str(tiny_task["dev"]),
        test_file=str(tiny_task["dev"]), max_length=16, dense_epochs=2.0, dense_lr=1e-3, epochs=1.0, lr=1e-3,
        batch_size=16, candidates=["alps:2:4", "alps-retrain:2:4"], seeds=[0], latency_batch=4, latency_length=16,
        rounds=1, latency_threads=1, onnx=False, calib_samples=32, output_dir=str(out)))
    compare(recipe, progress=False, log=lambda _: None)
    rows = {r["label"]: r for r in json.loads((out / "compare.json").read_text())["rows"]}
    assert set(rows) == {"dense", "alps:2:4", "alps-retrain:2:4"}
    for label in ("alps:2:4", "alps-retrain:2:4"):
        report = json.loads((out / "seed0" / label.replace(":", "-") / "report.json").read_text())
        assert report["all_layers_satisfy_pattern"] is True and report["overall_sparsity"] == pytest.approx(0.5)
