"""`pruneformer compare`: candidates, the Pareto front and the recommendation, and one end-to-end run on a
tiny model that is killed in the middle and resumed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pruneformer.cli import app
from pruneformer.compare.flow import compare
from pruneformer.compare.report import LATENCY_TIE, ORT_INT8, PYTORCH, pareto_front, recommend
from pruneformer.errors import RecipeError
from pruneformer.methods.candidates import parse_candidates


# -- candidates -----------------------------------------------------------------------------------------
def test_candidates_are_read_with_the_registry_and_spp_ratios_expand():
    found = parse_candidates(["admm:2:4 mlpruning:0.5", "spp:0.3,0.5", "srste:4x4:8", "dense", "admm:2:4"])
    assert [c.label for c in found] == ["admm:2:4", "mlpruning:0.5", "spp:0.3", "spp:0.5", "srste:4x4:8", "dense"]
    assert [c.kind for c in found] == ["pattern", "shrink", "spp", "spp", "pattern", "dense"]
    assert found[1].value == 0.5 and found[3].value == 0.5
    assert found[0].slug == "admm-2-4"


def test_every_smaller_model_gets_the_recipes_qat_and_masks_do_not(tmp_path):
    """Quantization-aware fine-tuning is for the int8 export of the models that are physically smaller: the
    shrunk candidates and SPP's cuts (whose search takes half the budget, their fine-tune the other half)."""
    from pruneformer.compare.flow import candidate_recipe
    from pruneformer.runs.recipe import build_recipe

    base = build_recipe({"model": "embedded", "prune": {"epochs": 8.0}, "qat": {"epochs": 1.0}})
    got = {c.label: candidate_recipe(base, c, 0, tmp_path / c.slug, None)
           for c in parse_candidates(["admm:2:4", "l1-structured:0.25", "spp:0.75"])}
    assert {label: r.qat.epochs for label, r in got.items()} == {"admm:2:4": 0.0, "l1-structured:0.25": 1.0,
                                                                 "spp:0.75": 1.0}
    assert (got["spp:0.75"].spp.epochs, got["spp:0.75"].spp.finetune_epochs, got["spp:0.75"].spp.distill) == (4.0, 4.0, True)


@pytest.mark.parametrize("spec, words", [
    ("prunomatic:2:4", ["Unknown candidate 'prunomatic:2:4'", "admm"]),
    ("admm:3:2", ["admm:3:2"]),
    ("admm", ["names no pattern"]),
    ("mlpruning:1.5", ["(0, 1]"]),
    ("mlpruning:half", ["not a number"]),
    ("spp:1.0", ["[0, 1)"]),
    ("spp:", ["names no ratio"]),
    ("dense", ["No pruning candidate"]),
])
def test_bad_candidates_are_one_line_errors(spec, words):
    with pytest.raises(RecipeError) as caught:
        parse_candidates([spec])
    message = str(caught.value)
    assert "\n" not in message and "Fix:" in message
    assert all(w in message for w in words), message


# -- the answer -----------------------------------------------------------------------------------------
def deployment(label, runtime, latency, accuracy, size, drop):
    return {"label": label, "runtime": runtime, "kind": "pattern", "seed": 0, "value": None,
            "model_dir": f"/x/seed0/{label}/model", "latency_ms": latency, "speedup": 100 / latency,
            "accuracy": accuracy, "drop": drop, "size_bytes": size}


POINTS = [deployment("dense", PYTORCH, 100, 85.0, 90e6, 0.0), deployment("dense", ORT_INT8, 50, 84.8, 25e6, 0.2),
          deployment("a", PYTORCH, 40, 84.5, 40e6, 0.5), deployment("b", ORT_INT8, 20, 82.0, 10e6, 3.0),
          deployment("c", PYTORCH, 45, 84.0, 45e6, 1.0)]


def test_pareto_front_keeps_exactly_the_points_nothing_beats():
    front = {(d["label"], d["runtime"]) for d in pareto_front(POINTS, "latency_ms")}
    assert front == {("dense", PYTORCH), ("dense", ORT_INT8), ("a", PYTORCH), ("b", ORT_INT8)}  # c: a beats it
    by_size = {(d["label"], d["runtime"]) for d in pareto_front(POINTS, "size_bytes")}
    assert ("c", PYTORCH) not in by_size and ("b", ORT_INT8) in by_size


def test_recommendation_is_the_fastest_and_smallest_within_the_drop(tmp_path):
    rec = recommend(POINTS, 1.0, tmp_path, "accuracy", "test")
    assert rec["fastest"]["label"] == "a" and rec["smallest"]["label"] == "dense"  # dense int8 is 25 MB
    assert rec["fastest"]["command"].startswith("pruneformer prune --recipe")
    assert rec["beyond"]["label"] == "b" and "larger drop" in rec["line"]  # faster, but 3 points down
    # a deployment within 10% of the fastest is a tie: the more accurate one is recommended
    tied = POINTS + [deployment("d", ORT_INT8, 43.9, 84.9, 30e6, 0.1)]
    assert recommend(tied, 1.0, tmp_path, "accuracy", "test")["fastest"]["label"] == "d"
    assert recommend(POINTS, 5.0, tmp_path, "accuracy", "test")["fastest"]["label"] == "b"
    assert "No candidate" in recommend(POINTS[2:], 0.1, tmp_path, "accuracy", "test")["line"]


# -- end to end -----------------------------------------------------------------------------------------
class Kill(Exception):
    pass


def flags(tiny_model_dir, tiny_task, out):
    return ["--model", str(tiny_model_dir), "--data", str(tiny_task["train"]), "--dev-file", str(tiny_task["dev"]),
            "--test-file", str(tiny_task["dev"]), "--max-length", "16", "--max-eval", "40", "--dense-epochs", "2", "--dense-lr", "1e-3",
            "--epochs", "1", "--lr", "1e-3", "--seeds", "0,1", "--latency-batch", "4", "--latency-length", "16",
            "--rounds", "2", "--latency-threads", "1", "--batch-size", "16", "--checkpoint-every", "4", "-o", str(out),
            "--quiet"]


CANDIDATES = ["magnitude-retrain:2:4", "l1-structured:0.5", "spp:0.5"]


def state_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "run_state.json").read_text())["done"]


def test_compare_end_to_end_killed_and_resumed(tiny_model_dir, tiny_task, tmp_path):
    from pruneformer.cli.app import recipe_overrides
    from pruneformer.runs.recipe import load_recipe

    out = tmp_path / "cmp"
    runner = CliRunner()
    # the recipe the CLI builds, run through the API with a callback that stops it in the middle of a unit: the
    # dense models of seeds 0 and 1 (32 steps each), seed 0's magnitude-retrain, l1-structured, SPP (search 8 +
    # fine-tune 8; 16 steps each), then step 6 of seed 1's magnitude-retrain (checkpoint at step 4)
    recipe = load_recipe(None, recipe_overrides(
        model=str(tiny_model_dir), data=str(tiny_task["train"]), dev_file=str(tiny_task["dev"]),
        test_file=str(tiny_task["dev"]), max_length=16, max_eval=40, dense_epochs=2.0, dense_lr=1e-3, epochs=1.0, lr=1e-3,
        batch_size=16, checkpoint_every=4, candidates=CANDIDATES, seeds=[0, 1], latency_batch=4, latency_length=16,
        rounds=2, latency_threads=1, output_dir=str(out)))
    steps = []

    def killer(step: int, loss: float) -> None:
        steps.append(step)
        if len(steps) == 32 + 32 + 16 + 16 + 16 + 6:
            raise Kill()

    with pytest.raises(Kill):
        compare(recipe, progress=False, log=lambda _: None, callbacks=[killer])
    assert not (out / "compare.md").exists()
    done_before = json.loads((out / "compare_state.json").read_text())["done"]
    assert {"seed0/dense", "seed0/magnitude-retrain-2-4", "seed0/l1-structured-0.5", "seed0/spp",
            "seed1/dense"} <= set(done_before) and "seed1/magnitude-retrain-2-4" not in done_before

    again = runner.invoke(app, ["compare", *CANDIDATES, *flags(tiny_model_dir, tiny_task, out)])
    assert again.exit_code == 2 and "--resume" in again.output  # never overwrites a compare
    result = runner.invoke(app, ["compare", *CANDIDATES, *flags(tiny_model_dir, tiny_task, out), "--resume"])
    assert result.exit_code == 0, result.output

    summary = json.loads((out / "compare.json").read_text())
    assert [r["label"] for r in summary["rows"]] == ["dense", "magnitude-retrain:2:4", "l1-structured:0.5", "spp:0.5"]
    # the killed session's time counts, to its last finished run (5 of them), beside the resumed session's
    wall = summary["wall"]
    assert len(wall["sessions_s"]) == 2 and wall["interrupted"] == 1 and all(s > 0 for s in wall["sessions_s"])
    assert wall["sessions_s"][0] >= sum(r["wall_s"] for u in done_before.values() for r in u.get("records", []))
    assert "1 of them ended early" in (out / "compare.md").read_text()
    assert all(r["seeds"] == [0, 1] for r in summary["rows"])
    killed = state_of(out / "seed1" / "magnitude-retrain-2-4")
    assert killed["phase0-masked"]["phase"]["resumed_from_step"] == 4  # continued from its checkpoint
    for seed in (0, 1):  # the dense model was trained once per seed; every candidate started from it
        assert state_of(out / f"seed{seed}" / "dense")["dense"]["phase"]["steps"] == 32
        for name in ("magnitude-retrain-2-4", "l1-structured-0.5", "spp"):
            assert state_of(out / f"seed{seed}" / name)["dense"]["phase"]["steps"] == 0, (seed, name)
    rows = {r["label"]: r for r in summary["rows"]}
    assert rows["l1-structured:0.5"]["encoder_kept"] < 0.6 and rows["spp:0.5"]["stored_parameters"] < \
        rows["dense"]["stored_parameters"] == rows["magnitude-retrain:2:4"]["stored_parameters"]
    assert rows["magnitude-retrain:2:4"]["encoder_kept"] == pytest.approx(0.5)
    assert set(rows["dense"]["latency_s"]) == {"pytorch fp32", "onnxruntime fp32", "onnxruntime int8"}
    for row in summary["rows"]:  # the mean of the per-seed drops, on the same two seeds
        assert row["drop"][0] == pytest.approx(rows["dense"]["accuracy"][0] - row["accuracy"][0])
    assert summary["pareto"]["latency"] and summary["nm_note"]
    # every seed's int8 model is scored, and an int8 deployment's accuracy and drop are paired by seed
    by_seed = summary["latency"]["int8_scores_by_seed"]
    assert {label: set(scores) for label, scores in by_seed.items()} == {r["label"]: {"0", "1"} for r in summary["rows"]}
    dense_acc = {s: 100 * by_seed["dense"][s]["accuracy"] for s in ("0", "1")}
    for row in summary["rows"]:
        int8 = [100 * by_seed[row["label"]][s]["accuracy"] for s in ("0", "1")]
        assert row["int8_accuracy"][0] == pytest.approx(sum(int8) / 2)
        assert row["int8_cost"][0] == pytest.approx(row["int8_accuracy"][0] - row["accuracy"][0])
        assert row["int8_drop"][0] == pytest.approx(rows["dense"]["accuracy"][0] - row["int8_accuracy"][0])
        deployed = next(d for d in summary["deployments"] if d["label"] == row["label"] and d["runtime"] == ORT_INT8)
        assert (deployed["accuracy"], deployed["drop"]) == (row["int8_accuracy"][0], row["int8_drop"][0])
    assert dense_acc["0"] == pytest.approx(100 * summary["latency"]["int8_scores"]["dense"]["accuracy"])
    # each seed's int8 model is scored on that seed's own test rows (--max-eval draws 40 of 64 by seed)
    from pruneformer.compare.report import onnx_dir
    from pruneformer.data import tokenize_bundle
    from pruneformer.deploy.runtime import score
    from pruneformer.models.saved import load_pruned_model
    from pruneformer.runs.engine import prepare_data

    tokenizer = load_pruned_model(tiny_model_dir)[1]
    tests = {s: tokenize_bundle(prepare_data(recipe.data, s), tokenizer, 16).test for s in (0, 1)}
    assert tests[0]["input_ids"] != tests[1]["input_ids"]
    for record in (r for u in json.loads((out / "compare_state.json").read_text())["done"].values()
                   for r in u.get("records", []) if r["label"] in ("dense", "l1-structured:0.5")):
        expected = score(onnx_dir(record["model_dir"]) / "model.int8.onnx", tests[record["seed"]], tokenizer,
                         ["accuracy"], None)
        assert by_seed[record["label"]][str(record["seed"])]["accuracy"] == pytest.approx(expected["accuracy"])
    rec = summary["recommendation"]
    # the rule compare_report implements: among deployments within the drop, those within LATENCY_TIE of the
    # fastest tie, and the most accurate of them is recommended (measured latencies on a shared CPU vary ~10%)
    within = [d for d in summary["deployments"] if d["drop"] <= 1.0 + 1e-9]
    tied = [d for d in within if d["latency_ms"] <= min(d["latency_ms"] for d in within) * LATENCY_TIE]
    best = max(tied, key=lambda d: (d["accuracy"], -d["latency_ms"]))
    assert (rec["fastest"]["label"], rec["fastest"]["runtime"]) == (best["label"], best["runtime"])
    markdown = (out / "compare.md").read_text()
    assert "Recommendation" in markdown and rec["fastest"]["command"] in markdown and "Pareto front" in markdown
    assert (out / "pareto.png").stat().st_size > 10_000


def test_compare_bad_input_is_one_line(tiny_model_dir, tiny_task, tmp_path):
    runner = CliRunner()

    def one_line(args, *words):
        result = runner.invoke(app, ["compare", *args])
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), result.output
        assert all(w in lines[0] for w in words), lines[0]

    base = flags(tiny_model_dir, tiny_task, tmp_path / "bad")
    one_line(["prunomatic:0.5", *base], "Unknown candidate")
    one_line(["admm:5:7", *base], "admm:5:7", "divide")
    one_line(["admm:2:4", *base, "--max-drop", "-1"], "max_drop")
    one_line(["admm:2:4", *base, "--seeds", "0,x"], "--seeds")
    assert not (tmp_path / "bad" / "seed0").exists()  # nothing trained before the errors
    # a compare directory from other data
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "compare_state.json").write_text(json.dumps({"done": {}, "signature": {"model": "x"}}))
    one_line(["admm:2:4", *flags(tiny_model_dir, tiny_task, tmp_path / "other"), "--resume"],
             "another model, data or budget")
