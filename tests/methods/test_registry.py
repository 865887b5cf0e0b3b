"""The method registry: a method registered from a test file runs through ``pruneformer prune`` end to end,
and the recipe, the CLI's help and the pipeline all read the one table."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pruneformer.cli import app
from pruneformer.errors import RecipeError
from pruneformer.methods import ADMMPruner, SRSTEPruner
from pruneformer.methods.registry import describe_methods, method_entry, method_names, unregister_method
from pruneformer.runs.recipe import build_recipe


@pytest.fixture
def iht():
    import new_method_plugin

    new_method_plugin.register()
    yield new_method_plugin
    new_method_plugin.unregister()


@pytest.mark.integration
def test_a_registered_method_runs_through_prune_end_to_end(iht, tiny_model_dir, tiny_task, tmp_path):
    out = tmp_path / "iht"
    result = CliRunner().invoke(app, [
        "prune", "--model", str(tiny_model_dir), "--data", str(tiny_task["train"]), "--dev-file", str(tiny_task["dev"]),
        "--max-length", "16", "--batch-size", "16", "--dense-epochs", "0.5", "--dense-lr", "1e-3", "--method", "iht",
        "--pattern", "2:4", "--epochs", "0.5", "--lr", "1e-3", "--iht-every", "3", "--quiet", "-o", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["method"] == "iht" and report["all_layers_satisfy_pattern"] is True
    assert [p["name"] for p in report["phases"]] == ["dense", "phase0-iht"] and report["phases"][1]["steps"] == 8
    assert report["overall_sparsity"] == pytest.approx(0.5)
    assert report["recipe"]["iht"] == {"every": 3}  # its own section, set by its own flag ...
    assert [h["step"] for h in report["phases"][1]["method_history"]] == [3, 6]  # ... read by its from_config


def test_a_plugins_section_and_flag_are_validated_and_documented(iht):
    help_text = CliRunner().invoke(app, ["prune", "--help"], env={"COLUMNS": "200"}).output
    assert "--iht-every" in help_text and "iht.every: optimizer steps between projections" in help_text
    result = CliRunner().invoke(app, ["prune", "--method", "iht", "--iht-every", "0", "-o", "/nonexistent/x"])
    assert result.exit_code == 2 and "Recipe field 'iht.every': Input should be greater than or equal to 1" in result.output
    with pytest.raises(RecipeError, match="'iht.evry' is not a known option"):
        build_recipe({"iht": {"evry": 2}})
    iht.unregister()  # gone from the recipe and the flags with the section
    with pytest.raises(RecipeError, match="'iht' is not a known option"):
        build_recipe({"iht": {"every": 2}})
    assert "--iht-every" not in CliRunner().invoke(app, ["prune", "--help"], env={"COLUMNS": "200"}).output


def test_recipe_names_come_from_the_registry(iht):
    assert "iht" in method_names() and "iht" in describe_methods()
    assert build_recipe({"prune": {"method": "iht"}}).prune.method == "iht"
    unregister_method("iht")
    with pytest.raises(RecipeError, match="Recipe field 'prune.method': Input should be 'dense'"):
        build_recipe({"prune": {"method": "iht"}})


def test_methods_build_themselves_from_their_recipe_section():
    recipe = build_recipe({"prune": {"method": "admm-srste", "epochs": 2.0, "pattern": "1:4"},
                           "admm": {"rho": 0.1, "rho_factor": 1.5, "epochs": 0.5}, "srste": {"decay_rate": 0.01}})
    admm, srste = method_entry("admm-srste").phases(recipe)
    assert (admm.epochs, srste.epochs) == (0.5, 1.5) and not admm.teacher and srste.teacher
    built = admm.build(recipe, None, steps=40)
    assert isinstance(built, ADMMPruner) and built.rho == 0.1 and built.pattern.spec == "1:4"
    assert isinstance(srste.build(recipe, None), SRSTEPruner)
