"""Property tests for pruneformer.core.patterns: the projection must be exact, not just plausible.

Weights are drawn from continuous distributions (randn with a hypothesis-chosen seed) so that, with
probability one, there are no zeros or ties and "the largest |w|" is unique. Tie behaviour is tested
separately with deliberately tied inputs.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pruneformer.core.patterns import (
    BlockPattern,
    NMPattern,
    Pattern,
    UnstructuredPattern,
    compute_masks,
    parse_pattern,
)
from pruneformer.errors import PatternError

# Applied per test (not via a global profile) so other test modules keep their own hypothesis defaults.
fast = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SEEDS = st.integers(0, 2**31 - 1)


def randn(shape: tuple[int, ...], seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)


# ---------------------------------------------------------------------------------------------------
# strategies: (pattern, weight) pairs whose shapes fit the pattern
# ---------------------------------------------------------------------------------------------------


@st.composite
def nm_case(draw, max_m: int = 8, max_groups: int = 6, max_rows: int = 6):
    m = draw(st.integers(2, max_m))
    n = draw(st.integers(1, m - 1))
    rows = draw(st.integers(1, max_rows))
    groups = draw(st.integers(1, max_groups))
    return NMPattern(n, m), randn((rows, groups * m), draw(SEEDS))


@st.composite
def block_case(draw, max_side: int = 4, max_tiles: int = 3):
    r = draw(st.integers(1, max_side))
    c = draw(st.integers(1, max_side))
    assume(r * c >= 2)
    k = draw(st.integers(1, r * c - 1))
    shape = (r * draw(st.integers(1, max_tiles)), c * draw(st.integers(1, max_tiles)))
    return BlockPattern(r, c, k), randn(shape, draw(SEEDS))


@st.composite
def unstructured_case(draw, max_side: int = 12):
    s = draw(st.floats(0.0, 0.99, exclude_max=False))
    shape = (draw(st.integers(1, max_side)), draw(st.integers(1, max_side)))
    return UnstructuredPattern(s), randn(shape, draw(SEEDS))


ANY_CASE = st.one_of(nm_case(), block_case(), unstructured_case())


def groups_of(pattern: Pattern, x: torch.Tensor) -> list[torch.Tensor]:
    """Reference grouping written independently of the library (explicit loops, tiny tensors only)."""
    out_f, in_f = x.shape
    if isinstance(pattern, NMPattern):
        return [x[i, j : j + pattern.m] for i in range(out_f) for j in range(0, in_f, pattern.m)]
    if isinstance(pattern, BlockPattern):
        r, c = pattern.rows, pattern.cols
        return [x[i : i + r, j : j + c].reshape(-1) for i in range(0, out_f, r) for j in range(0, in_f, c)]
    return [x.reshape(-1)]


def allowed(pattern: Pattern, x: torch.Tensor) -> int:
    if isinstance(pattern, NMPattern):
        return pattern.n
    if isinstance(pattern, BlockPattern):
        return pattern.k
    assert isinstance(pattern, UnstructuredPattern)
    return round((1 - pattern.sparsity) * x.numel())


# ---------------------------------------------------------------------------------------------------
# (1)-(3), (5): projection properties for every kind
# ---------------------------------------------------------------------------------------------------


@fast
@given(ANY_CASE)
def test_project_is_idempotent(case):
    pattern, w = case
    once = pattern.project(w)
    assert torch.equal(pattern.project(once), once)
    assert torch.equal(pattern.mask(once) & pattern.mask(w), pattern.mask(w))


@fast
@given(ANY_CASE)
def test_each_group_keeps_exactly_the_allowed_count(case):
    pattern, w = case
    mask = pattern.mask(w)
    assert mask.dtype == torch.bool and mask.shape == w.shape
    want = allowed(pattern, w)
    counts = [int(g.sum()) for g in groups_of(pattern, mask)]
    assert counts == [want] * len(counts)
    # continuous weights have no zeros, so the projection has exactly the same support
    assert torch.equal(pattern.project(w) != 0, mask)


@fast
@given(ANY_CASE)
def test_kept_magnitudes_dominate_dropped_ones(case):
    pattern, w = case
    mask = pattern.mask(w)
    for gw, gm in zip(groups_of(pattern, w.abs()), groups_of(pattern, mask)):
        kept, dropped = gw[gm], gw[~gm]
        if kept.numel() and dropped.numel():
            assert kept.min() >= dropped.max()


@fast
@given(ANY_CASE)
def test_satisfied_after_project_and_not_on_dense(case):
    pattern, w = case
    assume(allowed(pattern, w) < w.numel())  # sparsity 0% on a tiny tensor would keep everything
    assert not pattern.satisfied(w)
    assert pattern.satisfied(pattern.project(w))
    stats = pattern.group_stats(pattern.project(w))
    n_groups = len(groups_of(pattern, w))
    assert stats == {
        "groups": n_groups,
        "violating_groups": 0,
        "max_nonzeros_per_group": allowed(pattern, w),
        "allowed_per_group": allowed(pattern, w),
        "sparsity": pytest.approx(1 - allowed(pattern, w) * n_groups / w.numel()),
    }
    dense = pattern.group_stats(w)
    assert dense["violating_groups"] == n_groups and dense["sparsity"] == 0.0
    assert dense["max_nonzeros_per_group"] == len(groups_of(pattern, w)[0])


# ---------------------------------------------------------------------------------------------------
# (4) nearest point: brute force over every feasible support
# ---------------------------------------------------------------------------------------------------


def brute_force_min_sq_error(values: torch.Tensor, max_keep: int) -> float:
    """min over supports S with |S| <= max_keep of ||v - v_S||^2, by enumerating every S."""
    sq = values.double().pow(2)
    total = float(sq.sum())
    best = math.inf
    for size in range(0, max_keep + 1):
        combos = list(itertools.combinations(range(values.numel()), size))
        kept = sq[torch.tensor(combos, dtype=torch.long)].sum(-1) if size else torch.zeros(1, dtype=torch.float64)
        best = min(best, total - float(kept.max()))
    return best


def assert_nearest(pattern: Pattern, w: torch.Tensor) -> None:
    err = float((w.double() - pattern.project(w).double()).pow(2).sum())
    brute = sum(brute_force_min_sq_error(g, allowed(pattern, w)) for g in groups_of(pattern, w))
    assert math.sqrt(err) == pytest.approx(math.sqrt(max(brute, 0.0)), abs=1e-6)


@fast
@given(st.sampled_from([(2, 4), (2, 8), (4, 4)]), st.data())
def test_nm_projection_is_the_nearest_point(shape, data):
    m = data.draw(st.sampled_from([d for d in (2, 3, 4, 8) if shape[1] % d == 0]))
    n = data.draw(st.integers(1, m - 1))
    assert_nearest(NMPattern(n, m), randn(shape, data.draw(SEEDS)))


@fast
@given(st.data())
def test_block_projection_is_the_nearest_point(data):
    r = data.draw(st.sampled_from([1, 2, 4]))
    c = data.draw(st.sampled_from([1, 2, 4]))
    assume(r * c >= 2)
    k = data.draw(st.integers(1, r * c - 1))
    assert_nearest(BlockPattern(r, c, k), randn((4, 4), data.draw(SEEDS)))


@fast
@given(st.sampled_from([(2, 4), (2, 5), (3, 3)]), st.floats(0.0, 0.95), SEEDS)
def test_unstructured_projection_is_the_nearest_point(shape, s, seed):
    assert_nearest(UnstructuredPattern(s), randn(shape, seed))


@fast
@given(st.floats(0.0, 0.95), SEEDS)
def test_global_projection_is_the_nearest_point(s, seed):
    weights = {"a": randn((2, 3), seed), "b": randn((1, 4), seed + 1) * 0.5}
    pattern = UnstructuredPattern(s, "global")
    masks = compute_masks(pattern, weights)
    err = sum(float(w.double().pow(2)[~masks[n]].sum()) for n, w in weights.items())
    everything = torch.cat([w.reshape(-1) for w in weights.values()])
    brute = brute_force_min_sq_error(everything, pattern.keep_count(everything.numel()))
    assert math.sqrt(err) == pytest.approx(math.sqrt(max(brute, 0.0)), abs=1e-6)


# ---------------------------------------------------------------------------------------------------
# (9) global masks
# ---------------------------------------------------------------------------------------------------


@fast
@given(st.floats(0.0, 0.99), st.lists(st.tuples(st.integers(1, 9), st.integers(1, 9)), min_size=1, max_size=4), SEEDS)
def test_global_masks_exact_total_and_one_threshold(s, shapes, seed):
    weights = {f"layer.{i}": randn(shape, seed + i) * (i + 1) for i, shape in enumerate(shapes)}
    pattern = parse_pattern(f"{s * 100}%:global")
    masks = compute_masks(pattern, weights)
    assert list(masks) == list(weights)
    total = sum(w.numel() for w in weights.values())
    assert sum(int(m.sum()) for m in masks.values()) == round((1 - pattern.sparsity) * total)
    kept = torch.cat([w.abs()[masks[n]] for n, w in weights.items()])
    dropped = torch.cat([w.abs()[~masks[n]] for n, w in weights.items()])
    if kept.numel() and dropped.numel():
        assert kept.min() >= dropped.max()  # one threshold separates kept from dropped in every layer


def test_global_differs_from_per_layer_and_prunes_small_layers_harder():
    weights = {"big": torch.arange(1.0, 9.0).reshape(2, 4), "small": torch.full((2, 4), 0.01)}
    g = compute_masks(parse_pattern("50%:global"), weights)
    assert g["big"].all() and not g["small"].any()
    per_layer = compute_masks(parse_pattern("50%"), weights)
    assert int(per_layer["big"].sum()) == 4 and int(per_layer["small"].sum()) == 4
    assert per_layer["big"].tolist() == [[False] * 4, [True] * 4]


def test_global_ties_keep_exact_count_deterministically():
    weights = {"a": torch.ones(3, 4), "b": -torch.ones(2, 4)}
    pattern = parse_pattern("global:37.5%")  # keep round(0.625 * 20) = 12 of 20 equal magnitudes
    masks = compute_masks(pattern, weights)
    assert int(masks["a"].sum() + masks["b"].sum()) == 12
    assert masks["a"].all() and masks["b"].reshape(-1).tolist() == [False] * 8  # dict order then index
    again = compute_masks(pattern, weights)
    assert all(torch.equal(masks[n], again[n]) for n in masks)


def test_global_mixed_dtypes_and_empty_mapping():
    weights = {"h": torch.tensor([[4.0, 1.0]], dtype=torch.float16), "f": torch.tensor([[3.0, 2.0]])}
    masks = compute_masks(parse_pattern("50%:global"), weights)
    assert masks["h"].tolist() == [[True, False]] and masks["f"].tolist() == [[True, False]]
    assert compute_masks(parse_pattern("50%:global"), {}) == {}


@fast
@given(st.one_of(nm_case(), block_case(), unstructured_case()))
def test_compute_masks_per_layer_matches_mask(case):
    pattern, w = case
    masks = compute_masks(pattern, {"x": w, "y": -w})
    assert torch.equal(masks["x"], pattern.mask(w)) and torch.equal(masks["y"], pattern.mask(w))


# ---------------------------------------------------------------------------------------------------
# ties, zeros, layout and equivalences
# ---------------------------------------------------------------------------------------------------


def test_ties_and_zero_layers_keep_exact_count_with_lower_index_first():
    w = torch.ones(2, 8)
    assert NMPattern(2, 4).mask(w).tolist() == [[True, True, False, False] * 2] * 2
    assert int(BlockPattern(2, 2, 1).mask(torch.zeros(4, 4)).sum()) == 4
    assert int(UnstructuredPattern(0.75).mask(torch.zeros(4, 4)).sum()) == 4
    assert NMPattern(1, 4).project(torch.zeros(1, 4)).tolist() == [[0.0] * 4]


def test_nm_groups_run_along_the_input_dimension():
    w = torch.tensor([[1.0, 9.0, 3.0, 2.0, 5.0, 0.5, 7.0, 6.0], [4.0, 3.0, 2.0, 1.0, 1.0, 2.0, 3.0, 4.0]])
    assert NMPattern(2, 4).project(w).tolist() == [
        [0.0, 9.0, 3.0, 0.0, 0.0, 0.0, 7.0, 6.0],
        [4.0, 3.0, 0.0, 0.0, 0.0, 0.0, 3.0, 4.0],
    ]


def test_block_tiles_are_2d():
    w = torch.tensor([[1.0, 2.0, 10.0, 0.1], [3.0, 4.0, 0.2, 0.3], [5.0, 0.0, 1.0, 1.5], [0.5, 6.0, 2.0, 0.4]])
    assert BlockPattern(2, 2, 1).project(w).tolist() == [
        [0.0, 0.0, 10.0, 0.0],
        [0.0, 4.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0],
        [0.0, 6.0, 2.0, 0.0],
    ]


@fast
@given(st.integers(1, 6), st.integers(1, 6), SEEDS)
def test_1x4_2_block_equals_2_4(rows, groups, seed):
    w = randn((rows, 4 * groups), seed)
    assert torch.equal(BlockPattern(1, 4, 2).mask(w), NMPattern(2, 4).mask(w))
    assert torch.equal(BlockPattern(4, 1, 2).mask(w.T.contiguous()).T, NMPattern(2, 4).mask(w))


@fast
@given(block_case())
def test_noncontiguous_weights(case):
    pattern, w = case
    wt = w.T.contiguous().T  # same values, transposed strides
    assert not wt.is_contiguous() or w.shape[0] == 1 or w.shape[1] == 1
    assert torch.equal(pattern.mask(wt), pattern.mask(w))


def test_nan_ranks_first_and_pruned_nonfinite_becomes_zero():
    w = torch.tensor([[float("nan"), 1.0, 2.0, float("inf")], [1.0, float("-inf"), 3.0, 2.0]])
    mask = NMPattern(1, 4).mask(w)
    assert mask.tolist() == [[True, False, False, False], [False, True, False, False]]
    assert torch.equal(UnstructuredPattern(0.5).mask(torch.tensor([[float("nan"), 1.0]])), torch.tensor([[True, False]]))
    projected = NMPattern(2, 4).project(torch.tensor([[float("nan"), 1.0, 2.0, 0.5]]))
    assert projected[0, 0].isnan() and projected[0, 1:].tolist() == [0.0, 2.0, 0.0]


def test_project_passes_gradient_through_kept_weights_only():
    w = torch.tensor([[1.0, -3.0, 2.0, 0.5]], requires_grad=True)
    mask = NMPattern(2, 4).mask(w)
    assert not mask.requires_grad
    NMPattern(2, 4).project(w).sum().backward()
    assert w.grad.tolist() == [[0.0, 1.0, 1.0, 0.0]]


# ---------------------------------------------------------------------------------------------------
# (8) dtypes and devices
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@fast
@given(case=ANY_CASE)
def test_low_precision_weights_keep_dtype_and_match_float32(dtype, case):
    pattern, w32 = case
    w = w32.to(dtype)
    mask = pattern.mask(w)
    projected = pattern.project(w)
    assert projected.dtype == dtype and mask.dtype == torch.bool
    assert torch.equal(mask, pattern.mask(w.to(torch.float64)))  # same order as on exact values
    assert pattern.satisfied(projected)
    assert torch.equal(projected, torch.where(mask, w, torch.zeros((), dtype=dtype)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("spec", ["2:4", "4x4:8", "50%"])
def test_cuda_matches_cpu(spec):
    pattern = parse_pattern(spec)
    w = randn((64, 128), 0).to(torch.bfloat16)
    gpu = pattern.mask(w.cuda())
    assert gpu.device.type == "cuda" and torch.equal(gpu.cpu(), pattern.mask(w))
    tied = torch.ones(8, 16, device="cuda")
    assert torch.equal(pattern.mask(tied).cpu(), pattern.mask(tied.cpu()))


# ---------------------------------------------------------------------------------------------------
# (6) parsing
# ---------------------------------------------------------------------------------------------------


def assert_one_line_fix(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and "Fix:" in msg
    problem, fix = msg.split("Fix:")
    assert problem.strip() and fix.strip()
    return msg


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2:4", NMPattern(2, 4)),
        (" 1:4 ", NMPattern(1, 4)),
        ("4:8", NMPattern(4, 8)),
        ("4x4:8", BlockPattern(4, 4, 8)),
        ("1x4:2", BlockPattern(1, 4, 2)),
        ("4X4 : 8", BlockPattern(4, 4, 8)),
        ("50%", UnstructuredPattern(0.5)),
        ("0.5", UnstructuredPattern(0.5)),
        ("0", UnstructuredPattern(0.0)),
        ("12.5%", UnstructuredPattern(0.125)),
        ("50%:global", UnstructuredPattern(0.5, "global")),
        ("global:50%", UnstructuredPattern(0.5, "global")),
        ("GLOBAL: 90%", UnstructuredPattern(0.9, "global")),
        ("0.7:global", UnstructuredPattern(0.7, "global")),
    ],
)
def test_parse_accepted_forms(text, expected):
    assert parse_pattern(text) == expected


def test_canonical_specs_and_metadata():
    cases = {
        "2:4": ("nm", 0.5, False, {"n": 2, "m": 4}),
        "4x4:8": ("block", 0.5, False, {"rows": 4, "cols": 4, "k": 8}),
        "50%": ("unstructured", 0.5, False, {"sparsity": 0.5, "scope": "layer"}),
        "50%:global": ("unstructured", 0.5, True, {"sparsity": 0.5, "scope": "global"}),
    }
    for spec, (kind, density, is_global, params) in cases.items():
        p = parse_pattern(spec)
        assert (p.spec, p.kind, p.density, p.is_global, str(p)) == (spec, kind, density, is_global, spec)
        assert p.to_dict() == {"spec": spec, "kind": kind, **params}
    assert parse_pattern("global:50%").spec == "50%:global"
    assert parse_pattern("0.5").spec == "50%"
    assert parse_pattern("1:4").density == 0.25 and parse_pattern("4x4:4").density == 0.25
    assert parse_pattern("90%").density == pytest.approx(0.1)


@fast
@given(st.integers(2, 64).flatmap(lambda m: st.tuples(st.integers(1, m - 1), st.just(m))))
def test_nm_spec_round_trips(nm):
    p = NMPattern(*nm)
    assert parse_pattern(p.spec) == p and parse_pattern(p.spec).spec == p.spec == f"{nm[0]}:{nm[1]}"
    assert parse_pattern(p.to_dict()["spec"]) == p


@fast
@given(st.integers(1, 16), st.integers(1, 16), st.data())
def test_block_spec_round_trips(r, c, data):
    assume(r * c >= 2)
    p = BlockPattern(r, c, data.draw(st.integers(1, r * c - 1)))
    assert parse_pattern(p.spec) == p and parse_pattern(p.spec).spec == p.spec


@fast
@given(st.floats(0.0, 1.0, exclude_max=True), st.sampled_from(["layer", "global"]))
def test_unstructured_spec_round_trips_exactly(s, scope):
    p = UnstructuredPattern(s, scope)
    back = parse_pattern(p.spec)
    assert back == p and back.sparsity == s and back.spec == p.spec
    assert p.spec.endswith("%:global" if scope == "global" else "%")


@pytest.mark.parametrize(
    "text",
    ["4:4", "5:4", "0:4", "4x4:16", "4x4:0", "0x4:2", "100%", "-5%", "1.5", "1", "50", "abc", "2:4:8", "",
     "50%:local", "global", "%", "nan%", "inf"],
)
def test_parse_rejects_bad_specs_with_one_line_fix(text):
    with pytest.raises(PatternError) as err:
        parse_pattern(text)
    assert_one_line_fix(err)


def test_rejection_messages_name_the_problem():
    with pytest.raises(PatternError, match=r"Unknown sparsity pattern 'abc'\. Fix: write N:M \(e\.g\. 2:4\)"):
        parse_pattern("abc")
    with pytest.raises(PatternError, match=r"0 < N < M"):
        parse_pattern("4:4")
    with pytest.raises(PatternError, match=r"0 < K < 16"):
        parse_pattern("4x4:16")
    for text in ("100%", "-5%", "1.5"):
        with pytest.raises(PatternError, match=r"range \[0"):
            parse_pattern(text)
    with pytest.raises(PatternError, match=r"50%"):
        parse_pattern("50")  # a bare 50 is almost certainly a percentage: the fix says so
    with pytest.raises(PatternError) as err:
        parse_pattern("a\nb")
    assert_one_line_fix(err)


@pytest.mark.parametrize(
    "make",
    [lambda: NMPattern(0, 4), lambda: NMPattern(4, 2), lambda: BlockPattern(2, 2, 4), lambda: BlockPattern(0, 2, 1),
     lambda: UnstructuredPattern(1.0), lambda: UnstructuredPattern(-0.1), lambda: UnstructuredPattern(float("nan")),
     lambda: UnstructuredPattern(0.5, "model")],
)
def test_constructors_validate(make):
    with pytest.raises(PatternError) as err:
        make()
    assert_one_line_fix(err)


# ---------------------------------------------------------------------------------------------------
# (7) shape checks
# ---------------------------------------------------------------------------------------------------

LAYER = "encoder.layer.0.attention.self.query"


def test_nm_shape_error_names_layer_and_fix():
    with pytest.raises(PatternError) as err:
        parse_pattern("2:4").check_shape((384, 385), LAYER)
    assert str(err.value) == (
        f"Pattern 2:4 needs in_features divisible by 4, but layer '{LAYER}' has 385. "
        "Fix: pick an M that divides 385 or exclude the layer with --exclude."
    )


@fast
@given(st.integers(1, 8), st.integers(1, 8), st.integers(1, 40), st.integers(1, 40))
def test_check_shape_accepts_exactly_the_divisible_shapes(r, c, out_f, in_f):
    assume(r * c >= 2)
    block = BlockPattern(r, c, 1)
    if out_f % r == 0 and in_f % c == 0:
        block.check_shape((out_f, in_f), LAYER)
    else:
        with pytest.raises(PatternError) as err:
            block.check_shape((out_f, in_f), LAYER)
        msg = assert_one_line_fix(err)
        assert LAYER in msg and f"{out_f}x{in_f}" in msg and "--exclude" in msg
    nm = NMPattern(1, c + 1)
    if in_f % (c + 1):
        with pytest.raises(PatternError, match=LAYER.replace(".", r"\.")):
            nm.check_shape((out_f, in_f), LAYER)
    else:
        nm.check_shape((out_f, in_f), LAYER)


@pytest.mark.parametrize("spec", ["2:4", "2x2:2", "50%", "50%:global"])
@pytest.mark.parametrize("shape", [(8,), (2, 4, 4), ()])
def test_non_2d_weights_are_rejected(spec, shape):
    with pytest.raises(PatternError) as err:
        parse_pattern(spec).check_shape(shape, LAYER)
    assert LAYER in assert_one_line_fix(err)


def test_mask_and_compute_masks_check_shapes_with_layer_names():
    with pytest.raises(PatternError, match="'weight' has 6"):
        NMPattern(2, 4).mask(torch.randn(2, 6))
    with pytest.raises(PatternError, match="'bad.layer' has 6"):
        compute_masks(NMPattern(2, 4), {"ok": torch.randn(2, 8), "bad.layer": torch.randn(2, 6)})
    with pytest.raises(PatternError, match="'conv'"):
        compute_masks(parse_pattern("50%:global"), {"ok": torch.randn(2, 8), "conv": torch.randn(2, 2, 3)})
    with pytest.raises(PatternError, match="'weight' has 3"):
        NMPattern(2, 4).satisfied(torch.randn(1, 3))
    with pytest.raises(PatternError, match="floating-point"):
        NMPattern(2, 4).mask(torch.ones(1, 4, dtype=torch.int64))
    with pytest.raises(PatternError) as err:
        NMPattern(2, 4).check_shape((1, 3), "multi\nline name")
    assert "multi line name" in assert_one_line_fix(err)
