"""Hostile input, property-based: malformed recipes and command lines never give a traceback.

Every generated input breaks exactly one field or option (on top of random valid settings), so the test
knows which name the one-line error has to carry. The invalid values are derived from the recipe's own
pydantic schema (types, bounds, literals), so recipe sections added later are fuzzed too. Hypothesis runs
derandomized, so CI sees the same inputs on every run; each test counts its inputs and checks the total.
"""

from __future__ import annotations

import math
import string
import types
import typing

import annotated_types as at
import pytest
import typer
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from typer.testing import CliRunner

import pruneformer.compare.flow as compare_runner
import pruneformer.runs.oneshot as oneshot
import pruneformer.runs.pipeline as pipeline
import pruneformer.runs.solution_path as solution_path
from pruneformer.cli import app, deploy, recipe_overrides, training
from pruneformer.cli import compare as compare_cli
from pruneformer.errors import RecipeError
from pruneformer.methods.registry import method_names, oneshot_names
from pruneformer.runs.recipe import OneShotRecipe, build_oneshot_recipe, build_recipe, load_recipe, recipe_model

EXAMPLES = 1000
#: Every health check is on but too_slow, the one that depends on the machine's speed (a loaded CI CPU would
#: fail it by timing, not by a defect); deadline=None for the same reason.
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])

# -- the schema, walked ------------------------------------------------------------------------------


def leaf_fields(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], typing.Any]:
    """Every leaf field of a recipe by its path, e.g. ('admm', 'rho') -> FieldInfo."""
    leaves = {}
    for name, info in model.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            leaves.update(leaf_fields(info.annotation, prefix + (name,)))
        else:
            leaves[prefix + (name,)] = info
    return leaves


LEAVES = leaf_fields(recipe_model())  # the core sections and every registered method section
SECTIONS = [name for name, info in recipe_model().model_fields.items()
            if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)]
BAD_PATTERNS = ["5:4", "4:4", "0:4", "2:0", "banana", "", "%", "150%", "2:4:8", "4x0:2", "1x4:5", "-1:4", "2:-4",
                "99999999999999999999999:1", "1e999%", "nan%", "[/]", "2:4\n2:4"]
BAD_REGEXES = ["(", "[", "a[b", "*x", "(?P<", "\\"]
#: fields whose allowed values are the names in a registry (not a Literal): path -> the registry's names.
REGISTERED = {("prune", "method"): method_names, ("method",): oneshot_names}
JUNK = st.one_of(st.lists(st.integers(), max_size=2, min_size=1), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                                      min_size=1, max_size=2))


def core(annotation) -> tuple[typing.Any, bool]:
    """(the annotation without Optional, whether None is allowed)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return annotation, False


def bounds(info) -> dict[str, float]:
    found = {}
    for meta in info.metadata:
        for kind in ("ge", "gt", "le", "lt"):
            if isinstance(meta, getattr(at, kind.capitalize())):
                found[kind] = getattr(meta, kind)
    return found


def out_of_range(info, integral: bool) -> list[st.SearchStrategy]:
    """Numbers just and far outside the field's bounds."""
    b, options = bounds(info), []
    low = b.get("ge", b.get("gt"))
    if low is not None:
        edge = low if "gt" in b else (low - 1 if integral else math.nextafter(low, -math.inf))
        options.append(st.just(edge))
        options.append(st.integers(max_value=int(math.floor(edge))) if integral
                       else st.floats(max_value=edge, allow_nan=False, allow_infinity=False))
    high = b.get("le", b.get("lt"))
    if high is not None:
        edge = high if "lt" in b else (high + 1 if integral else math.nextafter(high, math.inf))
        options.append(st.just(edge))
        options.append(st.integers(min_value=int(math.ceil(edge))) if integral
                       else st.floats(min_value=edge, allow_nan=False, allow_infinity=False))
    return options


def invalid_values(path: tuple[str, ...], leaves: dict | None = None) -> st.SearchStrategy:
    """Values the field at ``path`` (of ``leaves``, default the pruning recipe's) must refuse."""
    info = (leaves or LEAVES)[path]
    kind, nullable = core(info.annotation)
    origin = typing.get_origin(kind)
    wrong_type = [JUNK] + ([] if nullable else [st.none()])
    if origin is typing.Literal or path in REGISTERED:
        allowed = set(REGISTERED[path]() if path in REGISTERED else typing.get_args(kind))
        return st.one_of(st.text(max_size=12).filter(lambda s: s not in allowed), st.integers(), *wrong_type)
    if kind is bool:
        return st.one_of(st.sampled_from(["maybe", "2", "nope", "truthy"]), st.integers().filter(lambda i: i not in (0, 1)),
                         st.floats(allow_nan=False).filter(lambda f: f not in (0.0, 1.0)), *wrong_type)
    if kind is int:
        return st.one_of(*out_of_range(info, True), st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: f != int(f)),
                         st.sampled_from(["abc", "1.5", "", "1e400", "one"]), *wrong_type)
    if kind is float:
        return st.one_of(*out_of_range(info, False), st.sampled_from([math.inf, -math.inf, math.nan, "inf", "nan", "abc", ""]),
                         *wrong_type)
    if kind is str:
        extra = [st.sampled_from(BAD_PATTERNS)] if path[-1] == "pattern" else []
        return st.one_of(st.integers(), st.floats(), st.booleans(), JUNK, st.text(max_size=8).map(lambda s: s + "\x00"),
                         *extra, *([] if nullable else [st.none()]))
    item = typing.get_args(kind)[0] if origin is list and typing.get_args(kind) else None
    if typing.get_origin(item) is typing.Annotated:
        item = typing.get_args(item)[0]
    if item is int:  # seeds: whole numbers >= 0, each once (JUNK's lists of integers can be valid seeds)
        return st.one_of(st.text(max_size=8), st.lists(st.integers(max_value=-1), min_size=1, max_size=3),
                         st.integers(0, 9).map(lambda i: [i, i]), st.just([]),
                         st.lists(st.sampled_from(["abc", "x", "1.5"]), min_size=1, max_size=2),
                         st.dictionaries(st.text(max_size=3), st.integers(), min_size=1, max_size=2),
                         *([] if nullable else [st.none()]))
    if origin is list:
        extra = [st.lists(st.sampled_from(BAD_REGEXES), min_size=1, max_size=2)] if path[-1] in ("include", "exclude") else []
        return st.one_of(st.text(max_size=8), st.lists(st.integers(), min_size=1, max_size=3),
                         st.dictionaries(st.text(max_size=3), st.integers(), min_size=1), *extra,
                         st.lists(st.text(max_size=4).map(lambda s: "\x00" + s), min_size=1, max_size=2))
    raise AssertionError(f"no invalid values known for {path}: {kind}")  # a new kind of field: teach the fuzzer


#: Valid settings mixed into every malformed recipe, so errors are found in varied company.
VALID = {("seed",): 3, ("data", "max_length"): 32, ("train", "batch_size"): 8, ("prune", "method"): "srste",
         ("prune", "pattern"): "4:8", ("admm", "rho"): 0.01, ("distill", "enabled"): True,
         ("prune", "include"): ["query", "ffn_.*"], ("train", "max_grad_norm"): None, ("dense", "epochs"): 0.5}
IDENT = st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=10)


def nest(flat: dict[tuple[str, ...], typing.Any]) -> dict:
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else node
        node[path[-1]] = value
    return tree


@st.composite
def malformed_recipes(draw) -> tuple[dict, str]:
    """(recipe dict, the field path its error must name)."""
    company = draw(st.dictionaries(st.sampled_from(sorted(VALID)), st.none(), max_size=4))
    flat = {path: VALID[path] for path in company}
    how = draw(st.sampled_from(["value"] * 8 + ["unknown", "section"]))
    if how == "unknown":
        where = draw(st.sampled_from([()] + [(s,) for s in SECTIONS]))
        name = draw(IDENT.filter(lambda n: n not in (LEAVES_BY_SECTION.get(where, set()))))
        flat[where + (name,)] = draw(st.integers())
        return nest(flat), ".".join(where + (name,))
    if how == "section":
        section = draw(st.sampled_from(SECTIONS))
        flat = {p: v for p, v in flat.items() if p[0] != section}
        tree = nest(flat)
        tree[section] = draw(st.one_of(st.integers(), st.text(max_size=5), st.lists(st.integers(), min_size=1)))
        return tree, section
    path = draw(st.sampled_from(sorted(LEAVES)))
    flat[path] = draw(invalid_values(path))
    return nest(flat), ".".join(path)


LEAVES_BY_SECTION: dict[tuple[str, ...], set[str]] = {}
for _path in LEAVES:
    LEAVES_BY_SECTION.setdefault(_path[:-1], set()).add(_path[-1])
LEAVES_BY_SECTION[()] = LEAVES_BY_SECTION.get((), set()) | set(SECTIONS)


def assert_one_line(message: str, names: list[str]) -> None:
    assert "\n" not in message and "Traceback" not in message, message
    assert any(name in message for name in names), (names, message)


def test_malformed_recipes_give_one_line_errors_naming_the_field(tmp_path):
    seen = []
    yaml_file = tmp_path / "recipe.yaml"

    @FUZZ
    @given(malformed_recipes(), st.booleans())
    def check(case, through_yaml):
        tree, field = case
        seen.append(field)
        with pytest.raises(RecipeError) as caught:
            if through_yaml:  # the same recipe as a file, as `pruneformer prune --recipe` reads it
                yaml_file.write_text(yaml.safe_dump(tree))
                load_recipe(yaml_file)
            else:
                build_recipe(tree)
        assert_one_line(str(caught.value), [f"'{field}"])

    check()
    assert len(seen) >= EXAMPLES
    assert len({f.split(".")[0] for f in seen}) >= len(SECTIONS)  # every section was hit


ONESHOT_LEAVES = leaf_fields(OneShotRecipe)


@st.composite
def malformed_oneshot_recipes(draw) -> tuple[dict, str]:
    """(one-shot recipe dict, the field its error must name): one bad value or one unknown field."""
    if draw(st.integers(0, 9)) == 0:
        name = draw(IDENT.filter(lambda n: (n,) not in ONESHOT_LEAVES))
        return {name: draw(st.integers())}, name
    path = draw(st.sampled_from(sorted(ONESHOT_LEAVES)))
    return {path[0]: draw(invalid_values(path, ONESHOT_LEAVES))}, path[0]


def test_malformed_oneshot_recipes_give_one_line_errors_naming_the_field():
    seen = []

    @settings(FUZZ, max_examples=EXAMPLES // 4)
    @given(malformed_oneshot_recipes())
    def check(case):
        tree, field = case
        seen.append(field)
        with pytest.raises(RecipeError) as caught:
            build_oneshot_recipe(tree)
        assert_one_line(str(caught.value), [f"'{field}"])

    check()
    assert len(seen) >= EXAMPLES // 4 and len(set(seen)) > len(ONESHOT_LEAVES) // 2


def test_arbitrary_recipe_files_give_one_line_errors(tmp_path):
    """Any bytes: a one-line RecipeError, or, where the bytes are YAML for a mapping, the recipe that mapping
    describes (an empty or comment-only file: the defaults). Both outcomes must have come up."""
    path = tmp_path / "blob.yaml"
    outcomes: list[str] = []
    defaults = build_recipe({})

    @FUZZ
    @given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode)
           | st.sampled_from([b"", b"# nothing\n", b"{}\n", b"---\n"]))
    def check(blob):
        path.write_bytes(blob)
        try:
            recipe = load_recipe(path)
        except RecipeError as exc:
            assert_one_line(str(exc), ["Recipe"])
            outcomes.append("error")
            return
        tree = yaml.safe_load(blob) or {}
        assert isinstance(tree, dict), blob  # what loads is a mapping, and the recipe is what it says
        assert recipe.model_dump() == build_recipe(tree).model_dump()
        outcomes.append("defaults" if recipe.model_dump() == defaults.model_dump() else "recipe")

    check()
    assert outcomes.count("error") >= EXAMPLES // 2 and "defaults" in outcomes


def test_yaml_aliases_are_refused(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nprune: {include: *b}\n")
    with pytest.raises(RecipeError, match="line 2: recipes may not use YAML aliases"):
        load_recipe(bomb)


# -- the command line -------------------------------------------------------------------------------

COMMAND = typer.main.get_command(app)

def recipe_path_of(option: str) -> tuple[str, ...] | None:
    """The recipe field a `prune` option sets, found by asking the CLI's own mapping."""
    try:
        tree = recipe_overrides(**{option: "probe"})
    except KeyError:
        return None
    path: list[str] = []
    while isinstance(tree, dict):
        (key, tree), = tree.items()
        path.append(key)
    return tuple(path)


#: options of `spp-search` that set the recipe's spp section (the rest map as `prune`'s do).
SPP_OPTIONS = {"epochs", "kappa", "nu", "lam", "alpha", "granularity", "mask_optimizer", "mask_lr", "finetune_epochs"}


def option_path(command: str, name: str) -> tuple[str, ...] | None:
    """The recipe field an option sets (None: it sets none)."""
    if command in ("prune", "compare") or (command == "spp-search" and name not in SPP_OPTIONS):
        return recipe_path_of(name)
    if command == "spp-search":
        return ("spp", name)
    if command == "oneshot" and (name,) in ONESHOT_LEAVES:
        return (name,)
    return ("data", "max_length") if command == "eval" and name == "max_length" else None


def cli_invalid(command: str, name: str, annotation) -> st.SearchStrategy | None:
    """Invalid values for one option, as strings on a command line (None: it takes any string)."""
    kind, _ = core(annotation)
    path = option_path(command, name)
    leaves = ONESHOT_LEAVES if command == "oneshot" else LEAVES
    texts = st.sampled_from(["abc", "1.5.2", "", "0x", "--", "[/]"])
    if path in leaves:
        info = leaves[path]
        field_kind, _ = core(info.annotation)
        if typing.get_origin(field_kind) is list:  # regexes: checked by the pruning recipe (oneshot: on the model)
            return st.sampled_from(BAD_REGEXES) if path[-1] in ("include", "exclude") and leaves is LEAVES else None
        if kind in (int, float):
            numbers = out_of_range(info, field_kind is int)
            return st.one_of(texts, *(n.map(repr) for n in numbers))
        if typing.get_origin(field_kind) is typing.Literal or path in REGISTERED:
            allowed = set(REGISTERED[path]() if path in REGISTERED else typing.get_args(field_kind))
            return st.text(alphabet=string.ascii_letters + "-:%", min_size=1, max_size=10).filter(
                lambda s: s not in allowed and not s.startswith("-"))
        if path[-1] == "pattern":
            return st.sampled_from([p for p in BAD_PATTERNS if p and not p.startswith("-")])
        return None
    if kind in (int, float):
        return texts
    if command == "inspect" and name == "pattern":
        return st.sampled_from([p for p in BAD_PATTERNS if p and not p.startswith("-")])
    if command == "export" and name in ("fmt", "quantize"):
        return st.text(alphabet=string.ascii_letters + "-:%", min_size=1, max_size=8).filter(
            lambda s: s not in ("onnx", "int8") and not s.startswith("-"))
    if command == "eval" and name == "split":
        return st.text(alphabet=string.ascii_letters, min_size=1, max_size=6).filter(lambda s: s not in ("dev", "test"))
    return None


COMMAND_FUNCTIONS = {"prune": training.prune, "eval": deploy.eval_cmd, "inspect": deploy.inspect,
                     "oneshot": training.oneshot_cmd, "spp-search": training.spp_search_cmd,
                     "spp-extract": training.spp_extract_cmd, "export": deploy.export_cmd,
                     "compare": compare_cli.compare_cmd}
#: what each command needs besides the malformed option: a positional directory, a required option.
COMPANY = {"prune": ["--output-dir", "runs/fuzz-never-written"], "oneshot": ["--output-dir", "runs/fuzz-never-written"],
           "spp-search": ["--output-dir", "runs/fuzz-never-written"], "spp-extract": ["{dir}", "--ratio", "0.3"],
           "eval": ["{dir}"], "inspect": ["{dir}"], "export": ["{dir}", "-o", "runs/fuzz-never-written"],
           "compare": ["admm:2:4", "--output-dir", "runs/fuzz-never-written"]}


def options_of(command: str) -> dict[str, tuple]:
    """option -> (its --flag, invalid-value strategy) for the options that can be malformed."""
    hints = typing.get_type_hints(COMMAND_FUNCTIONS[command])
    found = {}
    for param in COMMAND.commands[command].params:
        if param.param_type_name == "option" and not param.is_flag and param.opts[0].startswith("--"):
            strategy = cli_invalid(command, param.name, hints[param.name])
            if strategy is not None:
                found[param.name] = (param.opts[0], strategy)
    return found


CLI = {command: options_of(command) for command in COMMAND_FUNCTIONS}


@st.composite
def malformed_command_lines(draw, model_dir: str) -> tuple[list[str], list[str]]:
    """(argv, the names one of which the error must carry)."""
    command = draw(st.sampled_from(["prune"] * 3 + ["eval", "inspect", "oneshot", "oneshot", "spp-search", "spp-search",
                                                    "spp-extract", "export", "compare"]))
    args = [command] + [a.format(dir=model_dir) for a in COMPANY[command]]
    if command == "prune":  # valid company
        args += draw(st.sampled_from([[], ["--pattern", "4:8"], ["--method", "srste", "--seed", "2"], ["--quiet"]]))
    how = draw(st.sampled_from(["value"] * 6 + ["unknown", "missing"]))
    if how == "unknown":
        # not any real option of the command (the fuzzable ones in CLI are fewer: oneshot's --model is one that is not)
        real = {o[2:] for param in COMMAND.commands[command].params for o in param.opts + param.secondary_opts
                if o.startswith("--")}
        flag = "--" + draw(IDENT.filter(lambda n: n.replace("_", "-") not in real))
        return args + [flag, "1"], [flag]
    name = draw(st.sampled_from(sorted(CLI[command])))
    flag, strategy = CLI[command][name]
    if how == "missing":
        return args + [flag], [flag]
    value = draw(strategy)
    path = option_path(command, name)
    names = [flag, name] + ([".".join(path)] if path else [])
    return args + [flag + "=" + value if value.startswith("-") else flag, *([] if value.startswith("-") else [value])], names


def test_malformed_command_lines_give_one_line_errors_naming_the_option(tmp_path, monkeypatch):
    accepted = []
    monkeypatch.setattr(pipeline, "run", lambda recipe, **kw: accepted.append(recipe))
    monkeypatch.setattr(oneshot, "run_oneshot", lambda recipe, **kw: accepted.append(recipe))
    monkeypatch.setattr(solution_path, "search", lambda recipe, **kw: accepted.append(recipe))
    monkeypatch.setattr(solution_path, "extract", lambda *args, **kw: accepted.append(args))
    monkeypatch.setattr(compare_runner, "compare", lambda recipe, **kw: accepted.append(recipe))
    runner = CliRunner()
    missing_model = str(tmp_path / "no-model-here")
    seen = []

    @FUZZ
    @given(malformed_command_lines(missing_model))
    def check(case):
        argv, names = case
        seen.append(argv[0])
        result = runner.invoke(app, argv)
        assert result.exit_code == 2, (argv, result.output, result.exception)
        assert not accepted, argv
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and "Fix:" in lines[0], (argv, result.output)
        assert_one_line(lines[0], names)

    check()
    assert len(seen) >= EXAMPLES and set(seen) == set(COMMAND_FUNCTIONS)
