"""Multi-process training: 2 CPU processes on gloo (torchrun) against one process at the same global batch.

The 2-process run is interrupted mid-ADMM and resumed, and still has to end where the uninterrupted
single-process run ends: the same masks after every phase, the same metrics and predictions, and weights
within a tolerance that holds on any x86 CPU (see :data:`RTOL` for why and what was measured). ADMM's Z and
U, the masks and the weights must be identical on both ranks after every optimizer step: bit for bit, since
every rank runs the same kernels on the same numbers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_model_dir, make_tiny_task
from safetensors.torch import load_file

import pruneformer
from pruneformer.runs.pipeline import run
from pruneformer.runs.recipe import build_recipe

pytestmark = pytest.mark.integration  # whole runs

WORKER = Path(__file__).resolve().parents[1] / "distributed_worker.py"


def recipe_dict(tmp_path: Path, output_dir: Path) -> dict:
    """ADMM then SR-STE on a dropout-free tiny BERT; odd batch and split sizes so shards are uneven."""
    model = tmp_path / "model"
    if not model.exists():
        make_tiny_model_dir(model)
        config = json.loads((model / "config.json").read_text())
        config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # dropout would differ by design
        (model / "config.json").write_text(json.dumps(config))
        make_tiny_task(tmp_path / "train.csv", 250, seed=1)
        make_tiny_task(tmp_path / "dev.csv", 63, seed=2)
    return {
        "model": str(model), "output_dir": str(output_dir), "seed": 0,
        "data": {"source": str(tmp_path / "train.csv"), "dev_file": str(tmp_path / "dev.csv"), "max_length": 16},
        "train": {"batch_size": 15, "log_every": 1, "checkpoint_every": 5, "warmup_ratio": 0.0},
        "dense": {"epochs": 2.0, "lr": 1e-3},
        "prune": {"method": "admm-srste", "pattern": "2:4", "epochs": 2.0, "lr": 1e-3},
        "admm": {"interval": 4, "rho": 0.05, "penalty": "gradient", "epochs": 1.0},
    }


#: The two runs sum the same gradients in another order (2 shards, then the all-reduce), and the kernels sum in
#: another order on another CPU. Measured differences of final weights, single process against 2 ranks:
#: 4.3e-6 (AVX2 kernels) and 1.2e-5 between the AVX2 and the scalar kernels (ATEN_CPU_CAPABILITY=default);
#: 8.3e-4 in one tensor (next 7.9e-6) on an AVX-512 CPU. The outlier is SR-STE's mask near a tie: in this run
#: some 2:4 groups hold kept and pruned magnitudes 2e-8 apart or exactly equal (tests' margin probe), so the
#: summation order decides which weight the forward pass drops for a step, and AdamW, whose step is ~lr
#: whatever the gradient's size, moves the weights of that group by up to ~lr (1e-3) on another path. So:
#: nearly every entry within the tight tolerance, a few entries of a tensor (a near-tie group or two) within
#: two AdamW steps, and the tensor's root-mean-square difference within ATOL + 2e-3 of its own RMS (ATOL
#: covers the key biases, whose gradient is zero in exact arithmetic: their ~1e-6 values are pure rounding
#: noise, so they have no relative scale). Skipping the gradient all-reduce breaks
#: all three by orders of magnitude (measured: see the closing note of issue "Green on every machine").
RTOL, ATOL = 1e-3, 1e-4
MAX_OUTSIDE = 0.01  # share of a tensor's entries allowed beyond RTOL / ATOL
MAX_DRIFT = 2 * 1e-3  # two AdamW steps at the recipe's peak lr
MAX_RELATIVE = 2e-3  # RMS(got - want) <= ATOL + MAX_RELATIVE * RMS(want), per tensor


def weight_drift(got: torch.Tensor, want: torch.Tensor) -> tuple[float, float, float]:
    """(share of entries beyond RTOL / ATOL, largest absolute difference, RMS difference over its allowance
    ATOL + MAX_RELATIVE * RMS(want): at most 1 passes)."""
    diff = (got - want).abs().double()
    outside = float((diff > ATOL + RTOL * want.abs()).double().mean())
    rms = lambda t: float(t.double().pow(2).mean().sqrt())  # noqa: E731
    return outside, float(diff.max()), rms(diff) / (ATOL + MAX_RELATIVE * rms(want))


def assert_same_predictions(single: Path, multi: Path, dev_csv: Path) -> None:
    """Both saved models' logits on every dev sentence agree (within 1e-3) and so do their predictions."""
    import csv

    from pruneformer.models.saved import load_pruned_model

    texts = [row["text"] for row in csv.DictReader(dev_csv.open())]
    logits = []
    for directory in (single, multi):
        model, tokenizer, _ = load_pruned_model(directory)
        with torch.no_grad():
            logits.append(model.eval()(**tokenizer(texts, padding=True, return_tensors="pt")).logits)
    torch.testing.assert_close(logits[1], logits[0], rtol=1e-3, atol=1e-3)
    assert torch.equal(logits[1].argmax(-1), logits[0].argmax(-1))


def launch_two_ranks(tmp_path: Path) -> list[dict]:
    """Run the worker on ``tmp_path/config.json`` as 2 gloo ranks under torchrun; each rank's record."""
    # the workers import the pruneformer this test imported (an installed one, or a checkout on PYTHONPATH)
    code = Path(pruneformer.__file__).parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(WORKER.parent), str(code)])}
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(WORKER), str(tmp_path / "config.json")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_two_gloo_processes_match_one_process(tmp_path):
    single = tmp_path / "single"
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same per-process arithmetic as each torchrun rank (OMP_NUM_THREADS=1)
    try:
        reference = run(build_recipe(recipe_dict(tmp_path, single)), progress=False, log=lambda _: None)
    finally:
        torch.set_num_threads(torch_threads)

    multi = tmp_path / "multi"
    steps_per_epoch = -(-250 // 15)  # 17
    config = {"recipe": recipe_dict(tmp_path, multi), "record_dir": str(tmp_path),
              "interrupt_after_calls": 2 * steps_per_epoch + 7}  # step 7 of ADMM, after its checkpoint at step 5
    (tmp_path / "config.json").write_text(json.dumps(config))
    ranks = launch_two_ranks(tmp_path)

    assert [r["world"] for r in ranks] == [[0, 2], [1, 2]]  # two cooperating ranks, not two lone processes
    # identical method state, masks and weights on both ranks after every optimizer step of every phase
    assert ranks[0]["threads"] == ranks[1]["threads"] == 1
    assert ranks[0]["records"] == ranks[1]["records"]
    phases_seen = {name for name, _, _ in ranks[0]["records"]}
    assert phases_seen == {"admm", "srste"}
    admm_steps = [step for name, step, _ in ranks[0]["records"] if name == "admm"]
    assert admm_steps == list(range(7)) + list(range(5, steps_per_epoch))  # killed after 7, resumed from 5

    # the 2-process run was really resumed mid-ADMM from its checkpoint
    assert ranks[0]["resumed_from"][1] == 5

    # masks equal to the single-process run after every phase; weights and metrics within float tolerance
    for phase in ("phase0-admm", "phase1-srste"):
        want = load_file(str(single / "checkpoints" / f"{phase}.masks.safetensors"))
        got = load_file(str(multi / "checkpoints" / f"{phase}.masks.safetensors"))
        assert got.keys() == want.keys() and len(want) == 12
        assert all(torch.equal(got[k], want[k]) for k in want), phase
    want = load_file(str(single / "model" / "model.safetensors"))
    got = load_file(str(multi / "model" / "model.safetensors"))
    assert got.keys() == want.keys()
    for key in want:
        outside, largest, rms_share = weight_drift(got[key], want[key])
        assert outside <= MAX_OUTSIDE and largest <= MAX_DRIFT and rms_share <= 1, (
            f"{key}: {outside:.2%} of entries beyond rtol {RTOL:g} / atol {ATOL:g}, largest difference {largest:.2e}, "
            f"RMS difference {rms_share:.2f}x its allowance")
    # the two saved models compute the same function on the dev split
    assert_same_predictions(single / "model", multi / "model", tmp_path / "dev.csv")
    report = json.loads((multi / "report.json").read_text())
    for split in ("dense", "pruned"):
        for metric, value in reference[split]["dev"].items():
            assert report[split]["dev"][metric] == pytest.approx(value, abs=1e-6), (split, metric)
            assert ranks[1][split]["dev"][metric] == report[split]["dev"][metric]  # every rank gets the metrics
    for phase_ref, phase_multi in zip(reference["phases"], report["phases"]):
        ref_curve = [loss for _, loss in phase_ref["loss_curve"]]
        multi_curve = [loss for _, loss in phase_multi["loss_curve"]]
        assert multi_curve == pytest.approx(ref_curve, rel=1e-3), phase_ref["name"]
    admm_ref = [h["primal_residual"] for h in reference["phases"][1]["method_history"]]
    admm_multi = [h["primal_residual"] for h in report["phases"][1]["method_history"]]
    assert admm_multi == pytest.approx(admm_ref, rel=1e-3) and len(admm_ref) == 1 + steps_per_epoch // 4


def test_mlpruning_under_two_gloo_processes_shrinks_identically_and_rank0_writes(tmp_path):
    """Every rank must finalize the same masks and shrink to the same model; only rank 0 writes files."""
    out = tmp_path / "mlp"
    recipe = recipe_dict(tmp_path, out)
    recipe["prune"] = {"method": "mlpruning", "epochs": 1.0, "lr": 1e-3}
    recipe["mlpruning"] = {"target": 0.5, "threshold_init": 3.0, "score_lr": 0.2, "finetune_epochs": 0.25,
                           "attention_weight": 0.0}
    recipe["dense"] = {"epochs": 1.0, "lr": 1e-3}
    (tmp_path / "config.json").write_text(json.dumps({"mode": "structured", "recipe": recipe,
                                                      "record_dir": str(tmp_path)}))
    ranks = launch_two_ranks(tmp_path)
    assert [r["world"] for r in ranks] == [[0, 2], [1, 2]]
    assert len(ranks[0]["digests"]) == 1 and ranks[0]["digests"] == ranks[1]["digests"]  # the same shrunk weights
    assert ranks[0]["kept_per_layer"] == ranks[1]["kept_per_layer"] and ranks[0]["pruned"] == ranks[1]["pruned"]
    assert ranks[0]["remaining"] <= 0.5 + 1e-9
    saved = json.loads((out / "report.json").read_text())
    assert saved["structured"]["kept_per_layer"] == ranks[0]["kept_per_layer"]
    assert (out / "model" / "model.safetensors").is_file()


def test_spp_search_and_extract_under_two_gloo_processes_agree_and_rank0_writes(tmp_path):
    """SPP's masks are all-reduced like weights: both ranks must build the same path record, then cut and
    fine-tune the same smaller model."""
    out = tmp_path / "spp"
    recipe = recipe_dict(tmp_path, out)
    recipe["prune"] = {"method": "dense", "lr": 1e-3}
    recipe["dense"] = {"epochs": 1.0, "lr": 1e-3}
    recipe["spp"] = {"epochs": 1.0, "alpha": 5.0, "nu": 20.0, "lam": 1.0}
    (tmp_path / "config.json").write_text(json.dumps({"mode": "spp-search", "recipe": recipe,
                                                      "record_dir": str(tmp_path)}))
    ranks = launch_two_ranks(tmp_path)
    assert [r["world"] for r in ranks] == [[0, 2], [1, 2]]
    assert len(ranks[0]["digests"]) == 1 and ranks[0]["digests"] == ranks[1]["digests"]
    assert ranks[0]["entered"] == ranks[1]["entered"] and ranks[0]["dense"] == ranks[1]["dense"]
    assert ranks[0]["steps"] == -(-250 // 15)  # one epoch of the global batch, not of a rank's half
    summary = json.loads((out / "spp_search.json").read_text())
    assert summary["entered"] == ranks[0]["entered"] and (out / "model" / "spp_path.safetensors").is_file()
    # spp-extract at 0.5 with a half-epoch fine-tune: the same cut model and scores on both ranks, one save
    assert len(ranks[0]["cuts"]) == 1 and ranks[0]["cuts"] == ranks[1]["cuts"]
    assert ranks[0]["cut_scores"] == ranks[1]["cut_scores"] and ranks[0]["finetune_steps"] == -(-125 // 15)
    saved = json.loads((out / "spp_extract.json").read_text())
    assert [r["ratio"] for r in saved] == [0.5] and saved[0]["scores"] == ranks[0]["cut_scores"]
    assert (out / "ratio-0.50" / "model.safetensors").is_file()
