"""Behaviour digests of every command on tiny configs: sha256 of saved weights and masks, and the key report
numbers, so a refactor of the run engine can be checked bit for bit against the code before it.

    PYTHONPATH=src python scripts/behaviour_digests.py OUT.json   # then diff two OUT.json files

Uses the tiny model and task of tests/conftest.py (built fresh each time, deterministic).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

torch.set_num_threads(1)


def tensors_digest(path: Path) -> str:
    h = hashlib.sha256()
    tensors = load_file(str(path))
    for key in sorted(tensors):
        h.update(key.encode())
        h.update(tensors[key].contiguous().view(torch.uint8).numpy().tobytes() if tensors[key].numel() else b"")
    return h.hexdigest()[:16]


def files_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): tensors_digest(p) for p in sorted(root.rglob("*.safetensors"))
            if "checkpoints/" not in str(p.relative_to(root)) or p.name.endswith("masks.safetensors")}


def key_numbers(report: dict) -> dict:
    keep = ("dense", "pruned", "overall_sparsity", "all_layers_satisfy_pattern", "structured", "steps", "entered",
            "model_scores")
    out = {k: report[k] for k in keep if k in report}
    if "structured" in out:
        out["structured"] = {k: v for k, v in out["structured"].items() if k != "model_file_bytes"}
    if "phases" in report:
        out["phases"] = [(p["name"], p["steps"], p["loss_curve"], p.get("method_history")) for p in report["phases"]]
    return out


def main(dest: str) -> None:
    from conftest import FILLER, GOOD, VOCAB, make_tiny_model_dir, make_tiny_task
    from llm_fixtures import save_tiny_llama_dir

    from pruneformer.runs.oneshot import run_oneshot
    from pruneformer.runs.pipeline import run
    from pruneformer.runs.recipe import build_oneshot_recipe, build_recipe
    from pruneformer.runs.solution_path import extract, search

    root = Path(tempfile.mkdtemp(prefix="digests-"))
    model_dir = make_tiny_model_dir(root / "bert")
    train, dev = make_tiny_task(root / "train.csv", 256, seed=1), make_tiny_task(root / "dev.csv", 64, seed=2)
    base = {"model": str(model_dir), "seed": 0,
            "data": {"source": str(train), "dev_file": str(dev), "max_length": 16},
            "train": {"batch_size": 16, "log_every": 2, "checkpoint_every": 4, "warmup_ratio": 0.0},
            "dense": {"epochs": 1.0, "lr": 1e-3},
            "admm": {"interval": 4, "rho": 0.05, "penalty": "decoupled", "epochs": 1.0}}
    mlp = {"threshold_init": 3.0, "score_lr": 0.2, "block_size": 16, "target": 0.25}
    runs = {
        "admm": {"prune": {"method": "admm", "epochs": 2.0, "lr": 1e-3}},
        "srste": {"prune": {"method": "srste", "epochs": 1.0, "lr": 1e-3}},
        "magnitude-retrain": {"prune": {"method": "magnitude-retrain", "epochs": 1.0, "lr": 1e-3},
                              "distill": {"enabled": True}},
        "mlpruning": {"prune": {"method": "mlpruning", "epochs": 2.0, "lr": 1e-3}, "mlpruning": {**mlp, "block_keep": 0.5}},
        "mlpruning-ft": {"prune": {"method": "mlpruning", "epochs": 2.0, "lr": 1e-3},
                         "mlpruning": {**mlp, "finetune_epochs": 0.5}},
        "l1-structured": {"prune": {"method": "l1-structured", "epochs": 1.0, "lr": 1e-3}, "mlpruning": mlp},
    }
    result: dict = {}
    for name, extra in runs.items():
        out = root / name
        report = run(build_recipe(base, {**extra, "output_dir": str(out)}), progress=False, log=lambda _: None)
        result[name] = {"files": files_digest(out), "report": key_numbers(report)}
        print(name, "done", flush=True)
    out = root / "spp"
    summary = search(build_recipe(base, {"output_dir": str(out), "dense": {"epochs": 0.5, "lr": 1e-3},
                                         "spp": {"epochs": 1.0, "alpha": 5, "nu": 20, "lam": 1, "finetune_epochs": 0.5}}),
                     progress=False, log=lambda _: None)
    rows = extract(out, [0.3, 0.5], progress=False, log=lambda _: None)
    result["spp"] = {"files": files_digest(out), "report": key_numbers(summary),
                     "extract": [{k: r[k] for k in ("ratio", "parameters", "scores", "finetune_steps")} for r in rows]}
    print("spp done", flush=True)
    llama = save_tiny_llama_dir(root / "llama", VOCAB)
    text = root / "reviews.txt"
    words = FILLER + GOOD
    text.write_text("\n".join(" ".join(words[(i + j) % len(words)] for j in range(7)) for i in range(200)) + "\n")
    for method in ("sparsegpt", "wanda"):
        out = root / f"oneshot-{method}"
        report = run_oneshot(build_oneshot_recipe({"model": str(llama), "data": str(text), "method": method,
                                                   "calib_samples": 8, "seq_len": 16, "output_dir": str(out)}),
                             progress=False, log=lambda _: None)
        result[f"oneshot-{method}"] = {"files": files_digest(out), "report": key_numbers(report)}
    Path(dest).write_text(json.dumps(result, indent=1, sort_keys=True, default=str))
    print("written", dest)


if __name__ == "__main__":
    main(sys.argv[1])
