"""The ``pruneformer`` command end to end on the tiny model, and its one-line errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pruneformer.cli import app

pytestmark = pytest.mark.integration  # whole runs

runner = CliRunner()


def base_args(tiny_model_dir, tiny_task, out: Path) -> list[str]:
    return ["prune", "--model", str(tiny_model_dir), "--data", str(tiny_task["train"]),
            "--dev-file", str(tiny_task["dev"]), "--max-length", "16", "--batch-size", "16",
            "--dense-epochs", "1", "--dense-lr", "1e-3", "--lr", "1e-3", "--epochs", "1",
            "--admm-interval", "4", "--quiet", "--output-dir", str(out)]


def test_prune_then_inspect_then_eval(tiny_model_dir, tiny_task, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, base_args(tiny_model_dir, tiny_task, out) + ["--pattern", "2:4", "--method", "admm"])
    assert result.exit_code == 0, result.output
    assert "dense vs pruned dev accuracy" in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["pattern"] == "2:4" and report["all_layers_satisfy_pattern"] is True

    inspected = runner.invoke(app, ["inspect", str(out / "model"), "--json"])
    assert inspected.exit_code == 0, inspected.output
    payload = json.loads(inspected.output)
    assert payload["all_layers_satisfy_pattern"] is True and len(payload["layers"]) == 12
    assert all(row["sparsity"] == pytest.approx(0.5) for row in payload["layers"])

    # a stricter pattern than the model has is reported as violated, with exit code 1
    stricter = runner.invoke(app, ["inspect", str(out / "model"), "--pattern", "1:4"])
    assert stricter.exit_code == 1 and "NO" in stricter.output

    scored = runner.invoke(app, ["eval", str(out / "model"), "--data", str(tiny_task["train"]), "--dev-file", str(tiny_task["dev"]),
                                  "--max-length", "16"])
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.output)["accuracy"] == pytest.approx(report["pruned"]["dev"]["accuracy"], abs=1e-9)


def test_prune_from_yaml_recipe_with_flag_override(tiny_model_dir, tiny_task, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"""
model: {tiny_model_dir}
output_dir: {tmp_path / 'yaml-run'}
data: {{source: {tiny_task['train']}, dev_file: {tiny_task['dev']}, max_length: 16}}
train: {{batch_size: 16}}
dense: {{epochs: 0.5, lr: 1.0e-3}}
prune: {{method: magnitude, pattern: "4:8"}}
""")
    result = runner.invoke(app, ["prune", "--recipe", str(recipe), "--pattern", "1:4", "--quiet"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "yaml-run" / "report.json").read_text())
    assert report["pattern"] == "1:4" and report["overall_sparsity"] == pytest.approx(0.75)


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error:") and "Fix:" in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("extra,needle", [
    (["--pattern", "3:5"], "divisible by 5"),          # M does not divide in_features (64)
    (["--pattern", "4:4"], "4:4"),                     # N >= M
    (["--pattern", "banana"], "banana"),               # unknown pattern string
    (["--include", "nosuchlayer"], "nosuchlayer"),     # include pattern matching no layer
    (["--rho", "-1"], "admm.rho"),                     # out-of-range option
    (["--method", "prune-harder"], "prune.method"),    # unknown method
])
def test_bad_options_give_one_line_errors(tiny_model_dir, tiny_task, tmp_path, extra, needle):
    args = base_args(tiny_model_dir, tiny_task, tmp_path / "bad") + ["--dense-epochs", "0"] + extra
    assert needle in one_line_error(runner.invoke(app, args))


def test_bad_data_and_model_give_one_line_errors(tiny_model_dir, tiny_task, tmp_path):
    args = base_args(tiny_model_dir, tiny_task, tmp_path / "bad")
    missing = [a if a != str(tiny_task["train"]) else str(tmp_path / "nope.csv") for a in args]
    assert "nope.csv" in one_line_error(runner.invoke(app, missing))
    assert "sentence" in one_line_error(runner.invoke(app, args + ["--text-column", "sentence"]))
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    (not_a_model / "config.json").write_text('{"model_type": "resnet"}')
    wrong = [a if a != str(tiny_model_dir) else str(not_a_model) for a in args]
    assert "resnet" in one_line_error(runner.invoke(app, wrong))
    assert "does not exist" in one_line_error(runner.invoke(app, ["prune", "--recipe", str(tmp_path / "x.yaml")]))
    typo = tmp_path / "typo.yaml"
    typo.write_text("prune: {methd: admm}\n")
    assert "prune.methd" in one_line_error(runner.invoke(app, ["prune", "--recipe", str(typo)]))
