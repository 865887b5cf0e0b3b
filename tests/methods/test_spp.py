"""SPP: the linearized Bregman iteration, the search on a tiny BERT, the path record and the slicing."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

from pruneformer.compress.paired import extract, l1_scores, layers_of, removed_parameters, zero_removed
from pruneformer.core.targets import resolve_targets
from pruneformer.errors import CheckpointError, RecipeError
from pruneformer.methods.spp.lbi import LinearizedBregman
from pruneformer.methods.spp.cut import check_ratio, keep_top
from pruneformer.methods.spp.record import PathRecord, model_fingerprint
from pruneformer.methods.spp.search import SPPSearch, UnitMasks
from pruneformer.train.loop import make_optimizer


def tiny_bert(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=48, max_position_embeddings=32, num_labels=3)
    model = BertForSequenceClassification(config).eval()
    with torch.no_grad():  # non-zero biases everywhere, so bias handling is tested too
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)
    return model


def batch(seed: int = 1, n: int = 6, length: int = 12) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(n, length, dtype=torch.long)
    mask[0, 7:] = 0
    return {"input_ids": torch.randint(0, 50, (n, length), generator=g), "attention_mask": mask}


def sparse_regression(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n, p = 200, 30
    x = torch.randn(n, p, generator=g)
    beta = torch.zeros(p)
    support = [3, 7, 12, 20, 25]
    beta[support] = torch.tensor([3.0, -2.5, 2.0, -2.0, 1.5])
    return x, x @ beta + 0.1 * torch.randn(n, generator=g), support


# -- the iteration -------------------------------------------------------------------------------------
@pytest.mark.parametrize("init,nu,alpha", [(0.0, 1.0, 0.1), (1.0, 100.0, 1.0)])
def test_lbi_path_grows_and_true_support_enters_first(init, nu, alpha):
    x, y, support = sparse_regression()
    lbi = LinearizedBregman({"w": (x.shape[1],)}, kappa=1.0, nu=nu, lam=1.0, alpha=alpha, init=init)
    sizes = []
    for _ in range(1500):
        loss = ((x @ lbi.a["w"] - y) ** 2).mean() / 2 + lbi.coupling_loss()
        loss.backward()
        lbi.step_masks()
        lbi.step_path()
        sizes.append(lbi.support_size())
    entry = lbi.entry["w"]
    assert sizes[0] == 0 and max(sizes) >= len(support)
    assert all(b >= a for a, b in zip(sizes, sizes[1:]))  # the support only grows along this path
    entered = sorted((int(t), i) for i, t in enumerate(entry.tolist()) if t >= 0)
    assert sorted(i for _, i in entered[: len(support)]) == support
    # the true support enters well before anything else
    later = [t for t, i in entered[len(support):]]
    assert not later or min(later) > 2 * max(t for t, _ in entered[: len(support)])


def test_coupling_term_acts_through_the_gradient():
    lbi = LinearizedBregman({"m": (4,)}, nu=10.0, alpha=0.5, init=1.0)
    lbi.gamma["m"] = torch.tensor([0.0, 0.5, 1.0, 2.0])
    lbi.coupling_loss().backward()
    expected = (torch.ones(4) - lbi.gamma["m"]) / 10.0
    assert torch.allclose(lbi.a["m"].grad, expected)
    lbi.step_masks()
    assert torch.allclose(lbi.a["m"].detach(), torch.ones(4) - 0.5 * expected)
    assert lbi.a["m"].grad is None


# -- the search on a model -----------------------------------------------------------------------------
def run_search(model, steps: int = 12, **kwargs) -> SPPSearch:
    method = SPPSearch(**{"alpha": 2.0, "nu": 10.0, "lam": 0.5, **kwargs})
    method.attach(model, resolve_targets(model))
    optimizer = make_optimizer(model, 1e-2, 0.0, method.param_groups())  # the loop's own optimizer
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    model.train()
    for step in range(steps):
        method.before_forward(step)
        loss = model(**batch(seed=step), labels=labels).loss + method.loss_term(step)
        loss.backward()
        method.after_backward(step)
        optimizer.step()
        optimizer.zero_grad()
        method.after_optimizer_step(step)
    model.eval()
    return method


def test_masks_at_one_leave_the_model_unchanged_and_weights_stay_frozen():
    model = tiny_bert()
    dense = model(**batch()).logits
    before = {k: v.clone() for k, v in model.state_dict().items()}
    method = SPPSearch()
    method.attach(model, resolve_targets(model))
    assert torch.allclose(model(**batch()).logits, dense, atol=1e-6)
    method = run_search(tiny_bert())
    model = method.model
    assert all(not p.requires_grad for p in model.parameters())
    masks = method.finalize()
    assert all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # frozen: weights untouched
    assert torch.allclose(model(**batch()).logits, dense, atol=1e-6)  # hooks removed
    moved = torch.cat([a.detach().flatten() for a in method.lbi.a.values()])
    assert (moved != 1).all()
    assert set(masks) == {f"{g}.{i}" for g in ("qk", "vo", "ffn") for i in (0, 1)}
    assert sum(int(m.sum()) for m in masks.values()) == method.lbi.support_size() > 0


def test_train_weights_and_adamw_masks():
    method = run_search(tiny_bert(), train_weights=True, mask_optimizer="adamw", mask_lr=1e-2)
    assert not torch.equal(method.model.bert.encoder.layer[0].intermediate.dense.weight,
                           tiny_bert().bert.encoder.layer[0].intermediate.dense.weight)
    assert method.param_groups()[0]["params"][0] is method.lbi.a["qk.0"]
    assert (method.lbi.a["ffn.0"].detach() != 1).any()


def test_head_granularity_shapes_and_bad_options():
    method = run_search(tiny_bert(), granularity="head", steps=3)
    assert method.lbi.a["qk.1"].shape == (4, 8) and method.lbi.a["ffn.1"].shape == (48,)
    with pytest.raises(RecipeError):
        SPPSearch(granularity="rows")
    model = tiny_bert()
    with pytest.raises(RecipeError, match="layer 0 has no ffn_out"):
        SPPSearch().attach(model, resolve_targets(model, exclude=["ffn_out"]))


def test_state_dict_round_trip_resumes_exactly():
    method = run_search(tiny_bert(), steps=5)
    other = SPPSearch(alpha=2.0, nu=10.0, lam=0.5)
    model = tiny_bert()
    other.attach(model, resolve_targets(model))
    other.load_state_dict(method.state_dict())
    assert other.lbi.steps == 5
    for k in method.lbi.z:
        assert torch.equal(other.lbi.z[k], method.lbi.z[k]) and torch.equal(other.lbi.a[k], method.lbi.a[k])


# -- the path record -----------------------------------------------------------------------------------
def make_record(model, granularity="shared") -> PathRecord:
    method = run_search(model, granularity=granularity)
    method.finalize()
    return PathRecord.from_search(method, model_fingerprint(model))


def test_record_order_counts_and_round_trip(tmp_path):
    model = tiny_bert()
    record = make_record(model)
    assert record.entry["qk"].shape == (2, 8) and record.entry["ffn"].shape == (2, 48)
    assert record.gamma_path["ffn"].shape == (13, 2, 48) and record.path_steps[-1] == 12
    keep = record.keep(0.5)
    assert [int(keep[g].sum()) for g in ("qk", "vo", "ffn")] == [8, 8, 48]
    # the kept units are exactly the earliest entries: every kept entered unit entered no later than any dropped one
    entry = record.entry["ffn"]
    kept_t = entry[keep["ffn"] & (entry >= 0)]
    dropped_t = entry[~keep["ffn"] & (entry >= 0)]
    if kept_t.numel() and dropped_t.numel():
        assert kept_t.max() <= dropped_t.min()
    assert not (~keep["ffn"] & (entry >= 0)).any() or (keep["ffn"] | (entry >= 0)).all()
    record.save(tmp_path)
    loaded = PathRecord.load(tmp_path)
    assert all(torch.equal(loaded.keep(r)[g], record.keep(r)[g]) for r in (0.0, 0.3, 0.7) for g in keep)
    loaded.check_model(model)
    with pytest.raises(CheckpointError, match="another model"):
        loaded.check_model(tiny_bert(seed=5))


def test_bad_ratios_and_missing_record(tmp_path):
    for bad in (1.0, -0.1, 1.5, float("nan")):
        with pytest.raises(RecipeError, match=r"outside \[0, 1\)"):
            check_ratio(bad)
    with pytest.raises(CheckpointError, match="No SPP path record"):
        PathRecord.load(tmp_path)
    (tmp_path / "spp_path.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable SPP path record"):
        PathRecord.load(tmp_path)


# -- slicing by the mask equals masking ----------------------------------------------------------------
@pytest.mark.parametrize("granularity", ["shared", "head"])
@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.6])
def test_slicing_equals_masking(granularity, ratio):
    model = tiny_bert()
    record = make_record(model, granularity)
    keep = record.keep(ratio)
    layers = layers_of(model)
    masks = {f"{g}.{i}": keep[g][i].float() for g in keep for i in range(2)}
    hooks = UnitMasks(layers, masks)
    masked = model(**batch()).logits
    hooks.remove()
    shrunk = extract(model, keep).eval()
    assert torch.allclose(shrunk(**batch()).logits, masked, atol=1e-5)
    dense_params = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in shrunk.parameters()) == dense_params - removed_parameters(model, keep)
    if granularity == "shared":  # the count the ratio implies: round(ratio * units) per group, all heads
        hidden = 32
        removed = {g: int(round(ratio * keep[g].numel())) for g in keep}
        implied = removed["qk"] * 4 * 2 * (hidden + 1) + removed["vo"] * 4 * (2 * hidden + 1) \
            + removed["ffn"] * (2 * hidden + 1)
        assert removed_parameters(model, keep) == implied
    # zeroing by weights is the same masking
    zeroed = tiny_bert()
    zero_removed(zeroed, keep)
    assert torch.allclose(zeroed(**batch()).logits, masked, atol=1e-5)


def test_l1_scores_rank_by_weight_norm():
    model = tiny_bert()
    with torch.no_grad():
        model.bert.encoder.layer[1].intermediate.dense.weight[5] *= 100
        model.bert.encoder.layer[0].attention.self.key.weight[3 * 8 + 2] = 0  # head 3, dim 2
        model.bert.encoder.layer[0].attention.self.query.weight[3 * 8 + 2] = 0
    scores = l1_scores(model, "head")
    keep = keep_top(scores, 0.9)
    assert keep["ffn"][1, 5] and int(keep["ffn"].sum()) == 10
    assert scores["qk"][0, 3, 2] == 0 and not keep["qk"][0, 3, 2]
    assert l1_scores(model)["qk"].shape == (2, 8)


def test_cut_model_saves_and_reloads_with_identical_predictions(tmp_path):
    from transformers import AutoModelForSequenceClassification

    from pruneformer.models.saved import load_pruned_model, save_shrunk_model

    model = tiny_bert()
    keep = make_record(model).keep(0.5)
    shrunk = extract(model, keep).eval()
    expected = shrunk(**batch()).logits
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + [f"w{i}" for i in range(46)]))
    tokenizer = BertTokenizerFast(vocab=str(tmp_path / "vocab.txt"))
    save_shrunk_model(shrunk, tokenizer, tmp_path / "cut", {"method": "spp", "pattern": None, "ratio": 0.5})
    reloaded, _, info = load_pruned_model(tmp_path / "cut")
    assert info["ratio"] == 0.5
    assert torch.equal(reloaded.eval()(**batch()).logits, expected)
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "cut", trust_remote_code=True)
    assert torch.equal(plain.eval()(**batch()).logits, expected)
    assert sum(p.numel() for p in plain.parameters()) < sum(p.numel() for p in model.parameters())
