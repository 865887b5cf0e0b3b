"""Hostile input beyond the fuzzer: pickle files refused unless trusted, pickle-free checkpoints, divergence."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, get_linear_schedule_with_warmup
from typer.testing import CliRunner

from pruneformer.cli import app
from pruneformer.errors import CheckpointError, DivergenceError, ModelError
from pruneformer.models.loading import load_classifier
from pruneformer.models.saved import load_pruned_model
from pruneformer.runs.pipeline import run
from pruneformer.train.checkpoint import join_tensors, load_checkpoint, save_checkpoint, split_tensors
from pruneformer.train.divergence import likely_cause
from pruneformer.train.loop import make_optimizer


def pickled_copy(model_dir: Path, tmp_path: Path) -> Path:
    """The tiny model re-saved with torch.save's pickle format only (pytorch_model.bin)."""
    target = tmp_path / "pickled"
    shutil.copytree(model_dir, target)
    (target / "model.safetensors").unlink()
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    torch.save(model.state_dict(), target / "pytorch_model.bin")
    return target


def test_pickle_model_files_are_refused_unless_trusted(tiny_model_dir, tmp_path):
    pickled = pickled_copy(tiny_model_dir, tmp_path)
    with pytest.raises(ModelError, match=r"pytorch_model\.bin.*--trust-pickle"):
        load_classifier(pickled, 2)
    with pytest.raises(ModelError, match="--trust-pickle"):
        load_pruned_model(pickled)
    refused = CliRunner().invoke(app, ["inspect", str(pickled)])
    assert refused.exit_code == 2 and "--trust-pickle" in refused.output and "Traceback" not in refused.output
    trusted, _ = load_classifier(pickled, 2, trust_pickle=True)
    plain, _ = load_classifier(tiny_model_dir, 2)
    assert all(torch.equal(a, b) for a, b in zip(trusted.state_dict().values(), plain.state_dict().values()))
    assert CliRunner().invoke(app, ["inspect", str(pickled), "--trust-pickle"]).exit_code == 0


def tiny_training_state():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
    optimizer = make_optimizer(model, 1e-2, 0.01)
    scheduler = get_linear_schedule_with_warmup(optimizer, 2, 10)
    for _ in range(3):
        model(torch.randn(4, 8)).square().mean().backward()
        optimizer.step(), scheduler.step(), optimizer.zero_grad()
    return model, optimizer, scheduler


def test_checkpoints_hold_no_pickle_and_restore_the_optimizer_exactly(tmp_path):
    model, optimizer, scheduler = tiny_training_state()
    method_state = {"Z": {"a.weight": torch.ones(2, 2)}, "rho": 0.5, "history": [{"update": 1, "r": 0.25}]}
    save_checkpoint(tmp_path / "ckpt", model, optimizer, scheduler, method_state, {"step": 3})
    names = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert names == ["method.safetensors", "model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json"]

    fresh, fresh_opt, fresh_sched = tiny_training_state()
    torch.nn.init.zeros_(fresh[0].weight)
    fresh_opt.state.clear()
    state, trainer = load_checkpoint(tmp_path / "ckpt", fresh, fresh_opt, fresh_sched)
    assert trainer == {"step": 3} and state["rho"] == 0.5 and state["history"] == method_state["history"]
    assert torch.equal(state["Z"]["a.weight"], torch.ones(2, 2))
    assert torch.equal(fresh[0].weight, model[0].weight)
    want, got = optimizer.state_dict(), fresh_opt.state_dict()
    assert got["param_groups"] == want["param_groups"] and fresh_sched.state_dict() == scheduler.state_dict()
    for index, entry in want["state"].items():
        assert all(torch.equal(got["state"][index][k], v) for k, v in entry.items())


def test_split_and_join_round_trip_nested_state():
    tree = {"state": {0: {"step": torch.tensor(3.0), "m": torch.arange(4.0)}}, "betas": (0.9, 0.999),
            "groups": [{"params": [0, 1], "lr": 1e-3}], "none": None}
    tensors, skeleton = split_tensors(tree)
    json.dumps(skeleton)  # the skeleton is plain JSON
    back = join_tensors(tensors, json.loads(json.dumps(skeleton)))
    assert back["betas"] == (0.9, 0.999) and back["groups"] == tree["groups"] and back["none"] is None
    assert list(back["state"]) == [0] and torch.equal(back["state"][0]["m"], torch.arange(4.0))


def test_legacy_pickle_optimizer_file_is_refused_unless_trusted(tmp_path):
    model, optimizer, scheduler = tiny_training_state()
    save_checkpoint(tmp_path / "ckpt", model, optimizer, scheduler, None, {"step": 3})
    (tmp_path / "ckpt" / "optimizer.safetensors").unlink()  # what pruneformer 0.1 wrote instead:
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp_path / "ckpt" / "optimizer.pt")
    with pytest.raises(CheckpointError, match=r"optimizer\.pt, a pickle-based file.*--trust-pickle"):
        load_checkpoint(tmp_path / "ckpt", model, optimizer, scheduler)
    _, trainer = load_checkpoint(tmp_path / "ckpt", model, optimizer, scheduler, trust_pickle=True)
    assert trainer["step"] == 3


def test_huge_rho_stops_naming_rho_and_keeps_the_last_good_checkpoint(tiny_recipe, tmp_path):
    # rho grows 1e20-fold per Z/U update (every 4 steps): 1e-3, then 1e17, then 1e37 at step 8, whose penalty
    # gradient overflows float32 (gradient norm inf) at step 9; the checkpoint of step 8 is still finite
    exploding = {"rho": 1e-3, "rho_factor": 1e20, "rho_max": 1e60, "penalty": "gradient", "interval": 4, "epochs": 1.5}
    recipe = tiny_recipe(dense={"epochs": 1.0, "lr": 1e-3}, admm=exploding)
    with pytest.raises(DivergenceError) as caught:
        run(recipe, progress=False, log=lambda _: None)
    message = str(caught.value)
    checkpoint = Path(recipe.output_dir, "checkpoints", "phase0-admm")
    assert "step 9 of phase 'phase0-admm'" in message and "gradient norm became inf" in message
    assert "rho (1e+37) is far too large" in message and "--rho" in message.split("Fix:")[1]
    assert f"{checkpoint} (step 8)" in message and "\n" not in message
    kept = json.loads((checkpoint / "state.json").read_text())
    assert kept["trainer"]["step"] == 8
    assert all(torch.isfinite(t).all() for t in load_file(str(checkpoint / "model.safetensors")).values())
    assert all(torch.isfinite(t).all() for t in load_file(str(checkpoint / "method.safetensors")).values())

    # the fix the message gives: saner rho, delete the phase's checkpoint, --resume (the dense phase is kept)
    shutil.rmtree(checkpoint)
    report = run(tiny_recipe(dense={"epochs": 1.0, "lr": 1e-3}, admm={**exploding, "rho_factor": 1.3, "rho_max": 0.1}),
                 resume=True, progress=False, log=lambda _: None)
    assert report["all_layers_satisfy_pattern"] is True and report["phases"][0]["steps"] == 16


def test_likely_cause_reads_the_loss_curve():
    rising, _ = likely_cause(0.5, [0.7, 0.69, 2.5, 40.0], first_step=False, method_hint=None)
    assert "learning rate (0.5) is too high" in rising and "0.69 to 40" in rising
    flat, _ = likely_cause(0.5, [0.7, 0.69, 0.71], first_step=False, method_hint=None)
    assert "learning rate (0.5) is likely too high" in flat
    start, _ = likely_cause(0.5, [], first_step=True, method_hint=None)
    assert "starting weights or the inputs" in start
    assert likely_cause(0.5, [1.0], False, ("rho is huge", "lower rho")) == ("rho is huge", "lower rho")
