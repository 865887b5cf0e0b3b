"""Vision end to end on tiny local assets: an image folder (three classes told apart by colour), a tiny DINOv2
and ViT saved with their image processor; ``prune`` with MLPruning and with N:M runs the same engine as text,
shrinks, saves and reloads with plain transformers."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
import transformers
from PIL import Image

from pruneformer.data import load_data
from pruneformer.data.images import ImageCollator, image_bundle
from pruneformer.errors import DataError
from pruneformer.models.saved import load_pruned_model
from pruneformer.runs.pipeline import run
from pruneformer.runs.recipe import build_recipe

COLOURS = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images")
    rng = random.Random(0)
    for name, colour in COLOURS.items():
        (root / name).mkdir()
        for i in range(20):
            noisy = tuple(max(0, min(255, c + rng.randint(-40, 40))) for c in colour)
            Image.new("RGB", (40, 36), noisy).save(root / name / f"{i}.png")
    return root


def tiny_image_model_dir(directory: Path, family: str) -> Path:
    torch.manual_seed(0)
    if family == "dinov2":
        model = transformers.Dinov2Model(transformers.Dinov2Config(hidden_size=64, num_hidden_layers=2,
                                                                   num_attention_heads=4, image_size=28, patch_size=14))
    else:
        model = transformers.ViTModel(transformers.ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                                             intermediate_size=128, image_size=28, patch_size=7))
    model.save_pretrained(directory)
    transformers.BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 28, "width": 28},
                                   do_convert_rgb=True).save_pretrained(directory)
    return directory


def test_image_folder_loads_stratified_and_collates(image_folder):
    bundle = load_data(str(image_folder), seed=0)
    assert bundle.task.label_names == ["blue", "green", "red"] and bundle.task.num_labels == 3
    assert (len(bundle.train), len(bundle.dev), len(bundle.test)) == (42, 9, 9)
    assert sorted(bundle.test["label"]) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    processor = transformers.BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 28, "width": 28})
    ready = image_bundle(bundle, augment=True)
    batch = ImageCollator(processor)([ready.train[i] for i in range(4)])
    assert tuple(batch["pixel_values"].shape) == (4, 3, 28, 28) and batch["labels"].dtype == torch.long
    assert "augment" in ready.train.column_names and "augment" not in ready.dev.column_names
    with pytest.raises(DataError, match="class subfolder"):
        load_data(str(image_folder / "red"))


@pytest.mark.parametrize("family,method", [("dinov2", "mlpruning"), ("vit", "l1-structured"), ("vit", "magnitude-retrain"),
                                           ("dinov2", "alps-retrain")])
def test_prune_an_image_classifier_end_to_end(image_folder, tmp_path, family, method):
    model_dir = tiny_image_model_dir(tmp_path / "model", family)
    recipe = build_recipe({
        "model": str(model_dir), "output_dir": str(tmp_path / "run"), "seed": 0,
        # DINOv2 at another resolution than its config's 28 (its position embeddings are interpolated)
        "data": {"source": str(image_folder), "augment": True, **({"image_size": 42} if family == "dinov2" else {})},
        "dense": {"epochs": 2.0, "lr": 1e-3}, "prune": {"method": method, "epochs": 1.0, "lr": 1e-3},
        "mlpruning": {"target": 0.5, "threshold_init": 3.0}, "train": {"batch_size": 8, "checkpoint_every": 100}})
    report = run(recipe, progress=False, log=lambda _: None)
    assert report["dense"]["dev"]["accuracy"] >= 0.66  # colour is easy: the dense fine-tune learns it
    model, processor, info = load_pruned_model(report["model_dir"])
    assert info["method"] == method
    assert processor.crop_size["height"] == (42 if family == "dinov2" else 28)  # saved with the model it trained
    if method not in ("magnitude-retrain", "alps-retrain"):
        assert report["structured"]["remaining_fraction"] <= 0.5 + 1e-9
        remote = transformers.AutoModelForImageClassification.from_pretrained(report["model_dir"], trust_remote_code=True)
        pixels = processor(images=[Image.open(next((image_folder / "red").iterdir()))], return_tensors="pt")
        with torch.no_grad():
            assert (remote.eval()(**pixels).logits - model.eval()(**pixels).logits).abs().max() <= 1e-5
    else:
        assert report["overall_sparsity"] == pytest.approx(0.5, abs=1e-6)


def test_image_size_is_checked_before_any_work(image_folder, tmp_path):
    from pruneformer.errors import RecipeError

    for family, size, words in (("vit", 42, "only their config's image_size 28"), ("dinov2", 40, "patch size 14")):
        model_dir = tiny_image_model_dir(tmp_path / family, family)
        recipe = build_recipe({"model": str(model_dir), "output_dir": str(tmp_path / f"run-{family}"),
                               "data": {"source": str(image_folder), "image_size": size},
                               "prune": {"method": "magnitude-retrain"}})
        with pytest.raises(RecipeError) as err:
            run(recipe, progress=False, log=lambda _: None)
        assert words in str(err.value) and "\n" not in str(err.value)


def test_compare_runs_on_an_image_task_unchanged(image_folder, tmp_path):
    """`pruneformer compare` on images: the same flow, candidates trained, exported, int8-scored and timed on
    pixel inputs at the processor's crop size."""
    import json

    from pruneformer.cli.app import recipe_overrides
    from pruneformer.compare.flow import compare
    from pruneformer.runs.recipe import load_recipe

    model_dir = tiny_image_model_dir(tmp_path / "model", "vit")
    out = tmp_path / "cmp"
    recipe = load_recipe(None, recipe_overrides(
        model=str(model_dir), data=str(image_folder), dense_epochs=2.0, dense_lr=1e-3, epochs=1.0, lr=1e-3,
        batch_size=8, candidates=["l1-structured:0.5", "magnitude-retrain:2:4", "spp:0.5"], seeds=[0],
        latency_batch=4, rounds=2, latency_threads=1, output_dir=str(out)))
    compare(recipe, progress=False, log=lambda _: None)
    summary = json.loads((out / "compare.json").read_text())
    assert [r["label"] for r in summary["rows"]] == ["dense", "l1-structured:0.5", "magnitude-retrain:2:4", "spp:0.5"]
    latency = summary["latency"]
    assert latency["shape"] == [4, 28]
    assert any(k.endswith("onnxruntime int8") for k in latency["timing_s"])
    assert set(latency["int8_scores"]) == {"dense", "l1-structured:0.5", "magnitude-retrain:2:4", "spp:0.5"}
