"""Distillation's loss, and what happens to corrupt or foreign files."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForSequenceClassification
from typer.testing import CliRunner

from pruneformer.cli import app
from pruneformer.errors import CheckpointError
from pruneformer.runs.pipeline import run
from pruneformer.train.distill import Distiller

pytestmark = pytest.mark.integration  # whole runs


def tiny_bert(seed: int) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                     intermediate_size=64, vocab_size=40))


def test_distillation_loss_matches_its_formula():
    student, teacher = tiny_bert(0).eval(), tiny_bert(1).eval()
    batch = {"input_ids": torch.randint(0, 40, (3, 7)), "labels": torch.tensor([0, 1, 1])}
    distiller = Distiller(teacher, temperature=2.0, alpha=0.7, hidden_weight=0.5)
    out = student(**batch, output_hidden_states=True)
    got = distiller.loss(out, batch)
    with torch.no_grad():
        t_out = teacher(input_ids=batch["input_ids"], output_hidden_states=True)
    kl = F.kl_div(F.log_softmax(out.logits / 2, -1), F.softmax(t_out.logits / 2, -1), reduction="batchmean") * 4
    hidden = sum(F.mse_loss(a, b) for a, b in zip(out.hidden_states, t_out.hidden_states)) / len(out.hidden_states)
    torch.testing.assert_close(got, 0.3 * out.loss + 0.7 * kl + 0.5 * hidden)
    assert all(not p.requires_grad for p in teacher.parameters())


def test_pipeline_distils_only_the_phase_with_a_teacher_and_keeps_the_pattern(tiny_recipe, tmp_path):
    """ADMM + SR-STE with distillation against the same run without: distillation is outside ADMM, so the
    dense and ADMM phases are bit for bit the same; from the first SR-STE step the loss holds the KL and
    hidden-state terms beside (1 - alpha) x the task loss; the saved model is exactly 2:4 on its weights."""
    from pruneformer.core.patterns import parse_pattern
    from pruneformer.core.targets import resolve_targets
    from pruneformer.models.saved import load_pruned_model

    settings = {"train": {"batch_size": 16, "log_every": 1, "checkpoint_every": 4, "warmup_ratio": 0.0},
                "prune": {"method": "admm-srste"}}
    plain = run(tiny_recipe(output_dir=str(tmp_path / "plain"), **settings), progress=False, log=lambda _: None)
    recipe = tiny_recipe(distill={"enabled": True, "alpha": 0.5, "hidden_weight": 0.1}, **settings)
    report = run(recipe, progress=False, log=lambda _: None)
    distill = report["recipe"]["distill"]
    assert (distill["enabled"], distill["alpha"], distill["hidden_weight"]) == (True, 0.5, 0.1)
    curves = {r_name: {p["name"]: [loss for _, loss in p["loss_curve"]] for p in r["phases"]}
              for r_name, r in (("plain", plain), ("kd", report))}
    assert list(curves["kd"]) == ["dense", "phase0-admm", "phase1-srste"]
    assert curves["kd"]["dense"] == curves["plain"]["dense"] and curves["kd"]["phase0-admm"] == curves["plain"]["phase0-admm"]
    # same weights and batch at the first SR-STE step: 0.5 x the task loss, plus non-negative KL and hidden terms
    # that are not zero (the 2:4 student is not its dense teacher)
    first_kd, first_plain = curves["kd"]["phase1-srste"][0], curves["plain"]["phase1-srste"][0]
    assert first_kd > 0.5 * first_plain + 1e-3
    model = load_pruned_model(tmp_path / "run" / "model")[0]
    targets = resolve_targets(model)
    assert len(targets) == 12 and all(parse_pattern("2:4").satisfied(t.linear_weight) for t in targets)
    assert all(float((t.linear_weight == 0).float().mean()) == 0.5 for t in targets)
    assert report["all_layers_satisfy_pattern"] is True and report["overall_sparsity"] == pytest.approx(0.5)


def test_corrupt_saved_model_is_a_one_line_error(tiny_recipe, tmp_path):
    recipe = tiny_recipe(prune={"method": "magnitude"})
    run(recipe, progress=False, log=lambda _: None)
    weights = tmp_path / "run" / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    result = CliRunner().invoke(app, ["inspect", str(tmp_path / "run" / "model")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "corrupt" in result.output and "Fix:" in result.output


def test_corrupt_training_checkpoint_on_resume_is_named(tiny_recipe, tmp_path):
    recipe = tiny_recipe()
    calls = []

    def die(step, loss):
        calls.append(step)
        if len(calls) == 6:  # step 6 of ADMM, from the session's dense model
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(recipe, progress=False, log=lambda _: None, callbacks=[die])
    state = tmp_path / "run" / "checkpoints" / "phase0-admm" / "method.safetensors"
    state.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt.*Fix:"):
        run(recipe, resume=True, progress=False, log=lambda _: None)
