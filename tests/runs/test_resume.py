"""Every command resumes: interrupted in the middle of a phase (a callback raises, as a kill -9 would stop
the process between two checkpoints), rerun with ``resume``, and the result equals the uninterrupted run's,
bit for bit on CPU. ``prune`` on N:M methods is tested in test_pipeline.py; here: structured ``prune``,
``spp-search``, ``spp-extract`` and ``oneshot``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pruneformer.errors import PruneformerError
from pruneformer.runs.pipeline import run
from pruneformer.runs.recipe import build_oneshot_recipe
from pruneformer.runs.solution_path import extract, search


class Kill(Exception):
    pass


def killer(after_calls: int):
    calls = []

    def callback(step: int, loss: float) -> None:
        calls.append(step)
        if len(calls) == after_calls:
            raise Kill()
    return callback


def same_tensors(a: Path, b: Path) -> None:
    x, y = load_file(str(a)), load_file(str(b))
    assert x.keys() == y.keys()
    assert all(torch.equal(x[k], y[k]) for k in x), a


QUIET = dict(progress=False, log=lambda _: None)


def test_structured_prune_resumes_to_the_same_model(tiny_recipe, tmp_path):
    def recipe(name):
        return tiny_recipe(output_dir=str(tmp_path / name), prune={"method": "mlpruning", "epochs": 1.0, "lr": 1e-3},
                           dense={"epochs": 1.0, "lr": 1e-3}, mlpruning={"threshold_init": 3.0, "score_lr": 1.0,
                                                                          "target": 0.25, "finetune_epochs": 0.5})
    reference = run(recipe("ref"), **QUIET)
    with pytest.raises(Kill):  # 16 dense steps, then step 6 of the head/row step (checkpoint at step 4)
        run(recipe("killed"), callbacks=[killer(16 + 6)], **QUIET)
    with pytest.raises(PruneformerError, match="--resume"):
        run(recipe("killed"), **QUIET)
    report = run(recipe("killed"), resume=True, **QUIET)
    assert report["phases"][1]["resumed_from_step"] == 4
    same_tensors(tmp_path / "ref" / "model" / "model.safetensors", tmp_path / "killed" / "model" / "model.safetensors")
    assert report["pruned"] == reference["pruned"] and report["structured"]["kept_per_layer"] == \
        reference["structured"]["kept_per_layer"]


def spp_recipe(tiny_recipe, out: Path):
    return tiny_recipe(output_dir=str(out), dense={"epochs": 1.0, "lr": 1e-3},
                       spp={"epochs": 1.0, "alpha": 5, "nu": 20, "lam": 1, "finetune_epochs": 0.5})


def test_spp_search_resumes_to_the_same_path(tiny_recipe, tmp_path):
    reference = search(spp_recipe(tiny_recipe, tmp_path / "ref"), **QUIET)
    with pytest.raises(Kill):  # 16 dense steps, then step 7 of the search (checkpoint at step 4)
        search(spp_recipe(tiny_recipe, tmp_path / "killed"), callbacks=[killer(16 + 7)], **QUIET)
    with pytest.raises(PruneformerError, match="--resume"):
        search(spp_recipe(tiny_recipe, tmp_path / "killed"), **QUIET)
    summary = search(spp_recipe(tiny_recipe, tmp_path / "killed"), resume=True, **QUIET)
    for name in ("model/spp_path.safetensors", "model/model.safetensors"):
        same_tensors(tmp_path / "ref" / name, tmp_path / "killed" / name)
    assert summary["entered"] == reference["entered"] and summary["steps"] == reference["steps"] > 0


def test_spp_extract_resumes_to_the_same_models(tiny_recipe, tmp_path):
    search(spp_recipe(tiny_recipe, tmp_path / "search"), **QUIET)
    rows = extract(tmp_path / "search", [0.3, 0.5], output_dir=tmp_path / "ref", **QUIET)
    with pytest.raises(Kill):  # ratio 0.3 fine-tunes 8 steps; die at step 7 of ratio 0.5's (checkpoint at 4)
        extract(tmp_path / "search", [0.3, 0.5], output_dir=tmp_path / "killed", callbacks=[killer(8 + 7)], **QUIET)
    assert list(json.loads((tmp_path / "killed" / "extract_state.json").read_text())["done"]) == ["extract-0.30"]
    again = extract(tmp_path / "search", [0.3, 0.5], output_dir=tmp_path / "killed", resume=True, **QUIET)
    for ratio in ("0.30", "0.50"):
        same_tensors(tmp_path / "ref" / f"ratio-{ratio}" / "model.safetensors",
                     tmp_path / "killed" / f"ratio-{ratio}" / "model.safetensors")
    assert [r["scores"] for r in again] == [r["scores"] for r in rows]


def test_oneshot_resumes_to_the_same_model(tmp_path, monkeypatch):
    from conftest import FILLER, GOOD, VOCAB
    from llm_fixtures import save_tiny_llama_dir

    from pruneformer.methods import SparseGPTPruner
    from pruneformer.runs.oneshot import run_oneshot

    llama = save_tiny_llama_dir(tmp_path / "llama", VOCAB)
    text = tmp_path / "reviews.txt"
    words = FILLER + GOOD
    text.write_text("\n".join(" ".join(words[(i + j) % len(words)] for j in range(7)) for i in range(200)) + "\n")

    def recipe(name):
        return build_oneshot_recipe({"model": str(llama), "data": str(text), "method": "sparsegpt",
                                     "calib_samples": 8, "seq_len": 16, "output_dir": str(tmp_path / name)})
    reference = run_oneshot(recipe("ref"), **QUIET)
    prune_target, calls = SparseGPTPruner.prune_target, []

    def dies_in_layer_two(self, target):
        calls.append(target.name)
        if len(calls) == 9:  # 7 targets per layer: the second layer's second one
            raise Kill()
        return prune_target(self, target)

    monkeypatch.setattr(SparseGPTPruner, "prune_target", dies_in_layer_two)
    with pytest.raises(Kill):
        run_oneshot(recipe("killed"), **QUIET)
    monkeypatch.setattr(SparseGPTPruner, "prune_target", prune_target)
    with pytest.raises(PruneformerError, match="--resume"):
        run_oneshot(recipe("killed"), **QUIET)
    report = run_oneshot(recipe("killed"), resume=True, **QUIET)
    same_tensors(tmp_path / "ref" / "model" / "model.safetensors", tmp_path / "killed" / "model" / "model.safetensors")
    assert report["pruned"] == reference["pruned"] and report["dense"] == reference["dense"]
