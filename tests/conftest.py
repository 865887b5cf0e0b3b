"""Shared fixtures: a tiny random BERT saved as a local model directory, and a tiny text task.

Everything is built in seconds with nothing downloaded; the tiny task is learnable (the label is whether
a sentence contains a "good" word), so tests can check that training moves the metric.
"""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: test folders whose every test is a whole run (data -> model -> stages -> files); elsewhere a whole-run
#: test carries ``@pytest.mark.integration`` itself. ``pytest -m "not integration"`` is the fast loop.
INTEGRATION_FOLDERS = ("runs", "compare", "smoke")


def pytest_collection_modifyitems(config, items) -> None:
    root = Path(__file__).resolve().parent
    for item in items:
        parts = Path(str(item.fspath)).resolve().relative_to(root).parts
        if parts[0] in INTEGRATION_FOLDERS:
            item.add_marker(pytest.mark.integration)
torch.set_num_threads(min(2, torch.get_num_threads()))

GOOD = ["good", "great", "fine", "superb", "lovely", "brilliant"]
BAD = ["bad", "awful", "poor", "dull", "boring", "terrible"]
FILLER = ["the", "movie", "film", "was", "plot", "acting", "a", "really", "story", "and", "it", "very"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + GOOD + BAD + FILLER


def make_tiny_model_dir(directory: Path, num_labels: int = 2, model_type: str = "bert") -> Path:
    """Save a random tiny BERT-family classifier (hidden 64, 2 layers, 4 heads, FFN 128) and tokenizer."""
    from transformers import (
        AlbertConfig,
        AlbertForSequenceClassification,
        BertConfig,
        BertForSequenceClassification,
        BertTokenizerFast,
        DebertaV2Config,
        DebertaV2ForSequenceClassification,
        DistilBertConfig,
        DistilBertForSequenceClassification,
        ModernBertConfig,
        ModernBertForSequenceClassification,
    )

    directory.mkdir(parents=True, exist_ok=True)
    vocab = directory / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n")
    torch.manual_seed(0)
    if model_type == "distilbert":
        config = DistilBertConfig(vocab_size=len(VOCAB), dim=64, n_layers=2, n_heads=4, hidden_dim=128,
                                  max_position_embeddings=64, num_labels=num_labels)
        model = DistilBertForSequenceClassification(config)
    elif model_type == "modernbert":  # rotary, fused Wqkv and GLU Wi; layer 0 global, layer 1 local (window 8)
        config = ModernBertConfig(vocab_size=len(VOCAB), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=96, max_position_embeddings=64, num_labels=num_labels,
                                  global_attn_every_n_layers=2, local_attention=8, pad_token_id=0,
                                  cls_token_id=2, sep_token_id=3, bos_token_id=2, eos_token_id=3)
        model = ModernBertForSequenceClassification(config)
    elif model_type == "deberta-v2":  # disentangled attention: relative positions through query and key
        config = DebertaV2Config(vocab_size=len(VOCAB), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=128, max_position_embeddings=64, num_labels=num_labels)
        model = DebertaV2ForSequenceClassification(config)
    elif model_type == "albert":  # one layer's weights shared by 3 depths, factorised embedding
        config = AlbertConfig(vocab_size=len(VOCAB), hidden_size=64, embedding_size=32, num_hidden_layers=3,
                              num_attention_heads=4, intermediate_size=128, max_position_embeddings=64,
                              num_labels=num_labels)
        model = AlbertForSequenceClassification(config)
    else:
        config = BertConfig(vocab_size=len(VOCAB), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=128, max_position_embeddings=64, num_labels=num_labels)
        model = BertForSequenceClassification(config)
    model.save_pretrained(directory)
    BertTokenizerFast(vocab=str(vocab), do_lower_case=True).save_pretrained(directory)
    return directory


def make_tiny_task(path: Path, n: int, seed: int = 0) -> Path:
    """A CSV with 'text' and string 'label' columns: positive iff a GOOD word is present."""
    rng = random.Random(seed)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for _ in range(n):
            positive = rng.random() < 0.5
            words = rng.sample(FILLER, 5) + [rng.choice(GOOD if positive else BAD)]
            rng.shuffle(words)
            writer.writerow([" ".join(words), "pos" if positive else "neg"])
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_task(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-task")
    return {"train": make_tiny_task(root / "train.csv", 256, seed=1), "dev": make_tiny_task(root / "dev.csv", 64, seed=2)}


#: the whole-run tests' base recipe on the tiny model and task (``tiny_recipe`` adds the paths).
TINY_RECIPE = {
    "seed": 0,
    "train": {"batch_size": 16, "log_every": 2, "checkpoint_every": 4, "warmup_ratio": 0.0},
    "dense": {"epochs": 6.0, "lr": 1e-3},
    "prune": {"method": "admm", "pattern": "2:4", "epochs": 2.0, "lr": 1e-3},
    "admm": {"interval": 4, "rho": 0.05, "penalty": "decoupled", "epochs": 1.5},
}


def _tiny_base(model_dir: Path, task: dict[str, Path], out: Path) -> dict:
    return {**TINY_RECIPE, "model": str(model_dir), "output_dir": str(out),
            "data": {"source": str(task["train"]), "dev_file": str(task["dev"]), "max_length": 16}}


@pytest.fixture(scope="session")
def tiny_dense_dir(tiny_model_dir, tiny_task, tmp_path_factory) -> Path:
    """The tiny recipe's dense fine-tune, trained once per session and saved with its scores: the whole-run
    tests start from it (``dense.checkpoint``) instead of each fine-tuning the same model again."""
    from pruneformer.runs.pipeline import run
    from pruneformer.runs.recipe import build_recipe

    out = tmp_path_factory.mktemp("tiny-dense")
    run(build_recipe(_tiny_base(tiny_model_dir, tiny_task, out), {"prune": {"method": "dense"}}),
        progress=False, log=lambda _: None)
    return out / "dense"


@pytest.fixture
def tiny_recipe(tiny_model_dir, tiny_task, tiny_dense_dir, tmp_path):
    """A fast recipe on the tiny model and task: builds a Recipe with overrides. It starts from the session's
    dense model; a test that overrides ``dense`` fine-tunes its own, from the tiny model, as it asks."""
    from pruneformer.runs.recipe import build_recipe

    def make(**overrides):
        base = _tiny_base(tiny_model_dir, tiny_task, tmp_path / "run")
        if "dense" not in overrides:
            base["dense"] = {"epochs": 0.0, "lr": 1e-3, "checkpoint": str(tiny_dense_dir)}
        return build_recipe(base, overrides)

    return make
