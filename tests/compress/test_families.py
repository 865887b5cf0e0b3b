"""Physical shrinking of every family pruneformer cuts: the shrunk model computes what the masked model
computes, saves, and reloads with plain transformers (``trust_remote_code``) to the same logits."""

from __future__ import annotations

import copy

import pytest
import torch
import transformers
from family_fixtures import BUILDERS, family_batch, tiny_family_model

from pruneformer.compress import kept_encoder_weights, kept_per_layer, shrink_model
from pruneformer.core.structure import check_compressible
from pruneformer.core.targets import resolve_targets
from pruneformer.errors import ModelError
from pruneformer.families import family_of
from pruneformer.methods.l1_structured import L1StructuredPruner
from pruneformer.methods.mlpruning import MLPruner
from pruneformer.models.saved import save_shrunk_model

FAMILIES = sorted(BUILDERS)
AUTO = {"text": "AutoModelForSequenceClassification", "image": "AutoModelForImageClassification"}


def masked_and_plans(name: str, method: str, target: float):
    """The model with a structured method's final masks applied, and the plans that cut it."""
    model = tiny_family_model(name)
    pruner = L1StructuredPruner(target=target) if method == "l1" else MLPruner(target=target)
    pruner.attach(model, resolve_targets(model))
    if method == "mlpruning":  # scores as if trained: a random ranking, so finalize cuts unevenly
        with torch.no_grad():
            for score in pruner.scores.values():
                score.normal_()
    pruner.finalize()
    return model, pruner.layer_plans(model.config.num_hidden_layers), pruner


def logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("method", ["l1", "mlpruning"])
def test_shrunk_equals_masked_and_reloads(name, method, tmp_path):
    masked, plans, _ = masked_and_plans(name, method, 0.5)
    batch = family_batch(name)
    dense = logits(tiny_family_model(name), batch)
    shrunk = shrink_model(masked, plans).eval()
    expected = logits(masked, batch)
    assert (expected - dense).abs().max() > 1e-4  # the masks change the model (10x the tolerance below)
    assert (logits(shrunk, batch) - expected).abs().max() <= 1e-5
    assert kept_encoder_weights(shrunk) < 0.75 * kept_encoder_weights(tiny_family_model(name))
    heads = family_of(masked).num_heads(masked.config)
    assert [k["heads"] for k in kept_per_layer(shrunk)] == [heads if p.heads is None else len(p.heads) for p in plans]
    save_shrunk_model(shrunk, None, tmp_path, {"method": method})
    auto = getattr(transformers, AUTO[BUILDERS[name][1]])
    reloaded = auto.from_pretrained(tmp_path, trust_remote_code=True).eval()
    assert (logits(reloaded, batch) - expected).abs().max() <= 1e-5


def test_gqa_heads_are_cut_by_key_value_group():
    masked, plans, pruner = masked_and_plans("llama", "l1", 0.5)
    assert pruner.groups == 2
    for plan in plans:  # whole groups: heads (0, 1) read KV head 0, heads (2, 3) KV head 1
        assert plan.heads in ([0, 1], [2, 3], [0, 1, 2, 3], [])
    shrunk = shrink_model(masked, plans)
    kept = [p for p in plans if p.heads == [0, 1] or p.heads == [2, 3]]
    assert kept, "the half budget cuts a group somewhere"
    layer = next(i for i, p in enumerate(plans) if p in kept)
    attention = shrunk.inner.model.layers[layer].self_attn
    assert attention.k_proj.out_features == 16 and attention.q_proj.out_features == 32
    assert attention.num_key_value_groups == 2


def test_a_layer_with_no_head_or_unit_left_is_its_bias():
    from pruneformer.core.structure import LayerPlan

    for name in ("roberta", "qwen2", "dinov2"):
        model = tiny_family_model(name)
        with torch.no_grad():  # what the masks do: every head and unit of layer 1 contributes nothing
            layer = family_of(model)
            stack = dict(model.named_modules())
            prefix = next(n for n in stack if n.endswith(layer.layers_path))
            for role in ("query", "key", "value", "ffn_in", "ffn_gate"):
                if role in layer.roles:
                    module = stack[f"{prefix}.1.{layer.roles[role]}"]
                    module.weight.zero_()
                    if module.bias is not None:
                        module.bias.zero_()
        batch = family_batch(name)
        shrunk = shrink_model(model, [LayerPlan(), LayerPlan(heads=[], ffn_units=[])])
        assert (logits(shrunk, batch) - logits(model, batch)).abs().max() <= 1e-5


def test_families_that_cannot_be_cut_refuse_in_one_line():
    gpt2 = transformers.GPT2ForSequenceClassification(transformers.GPT2Config(n_embd=64, n_layer=1, n_head=4,
                                                                              vocab_size=50, pad_token_id=0))
    with pytest.raises(ModelError) as err:
        check_compressible(gpt2)
    assert "gpt2" in str(err.value) and "c_attn" in str(err.value) and "\n" not in str(err.value)


def test_rotary_families_refuse_single_query_key_dimensions():
    from pruneformer.core.structure import LayerPlan

    model = tiny_family_model("llama")  # head_dim 16: dimension i rotates with i + 8
    with pytest.raises(ValueError, match="pairs"):
        shrink_model(copy.deepcopy(model), [LayerPlan(qk_dims=list(range(8))), LayerPlan()])
    shrunk = shrink_model(copy.deepcopy(model), [LayerPlan(qk_dims=[1, 2, 9, 10], v_dims=[0, 5, 6]), LayerPlan()])
    assert shrunk.inner.model.layers[0].self_attn.rotary_index.tolist() == [1, 2, 9, 10]


@pytest.mark.parametrize("name", FAMILIES)
def test_shrunk_models_export_to_onnx_with_parity(name, tmp_path):
    """``export --quantize int8`` on each family's shrunk model: the fp32 graph matches PyTorch (export refuses
    otherwise) and the int8 graph is smaller; rotary families export unfused (see ``deploy.export``); image
    models are checked on images through their own processor."""
    from conftest import VOCAB
    from transformers import BertTokenizerFast, BitImageProcessor

    from pruneformer.deploy.export import export_model

    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    preprocessor = BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 28, "width": 28}) \
        if BUILDERS[name][1] == "image" else BertTokenizerFast(vocab=str(tmp_path / "vocab.txt"))
    masked, plans, _ = masked_and_plans(name, "l1", 0.5)
    save_shrunk_model(shrink_model(masked, plans), preprocessor, tmp_path / "model", {"method": "l1-structured"})
    record = export_model(tmp_path / "model", tmp_path / "onnx", quantize="int8", log=lambda line: None)
    assert record["check"]["fp32"]["max_abs_diff"] <= 1e-5
    assert record["check"]["fp32"]["predictions_agree"] == record["check"]["fp32"]["examples"]
    assert (tmp_path / "onnx" / "model.int8.onnx").stat().st_size < (tmp_path / "onnx" / "model.onnx").stat().st_size


PAIRED_FAMILIES = ["bert", "distilbert", "dinov2", "electra", "roberta", "vit"]
ROTARY_FAMILIES = ["llama", "qwen2"]  # grouped-query attention (2 KV heads), rotated pairs, SwiGLU


@pytest.mark.parametrize("name,granularity", [(n, g) for n in PAIRED_FAMILIES for g in ("shared", "head")]
                         + [(n, "shared") for n in ROTARY_FAMILIES])
def test_spp_cut_equals_the_masked_model(name, granularity, tmp_path):
    """SPP's keep-masks over paired units (random, 60% kept) cut physically: the extracted model computes what
    the model with those units zeroed computes (and what SPP's own mask hooks compute), holds exactly the
    parameters :func:`removed_parameters` says it lost, and reloads with plain transformers."""
    from pruneformer.compress.paired import extract, layers_of, removed_parameters, zero_removed
    from pruneformer.methods.spp.search import UnitMasks

    model = tiny_family_model(name)
    layers = layers_of(model)
    generator = torch.Generator().manual_seed(0)
    keep = {g: torch.rand((len(layers),) + layers[0].mask_shape(g, granularity), generator=generator) < 0.6
            for g in ("qk", "vo", "ffn")}
    masked = copy.deepcopy(model)
    zero_removed(masked, keep)
    batch = family_batch(name)
    expected = logits(masked, batch)
    assert (expected - logits(model, batch)).abs().max() > 1e-4
    hooks = UnitMasks(layers, {f"{g}.{i}": keep[g][i].float() for g in keep for i in range(len(layers))})
    assert (logits(model, batch) - expected).abs().max() <= 1e-5
    hooks.remove()
    shrunk = extract(model, keep).eval()
    assert (logits(shrunk, batch) - expected).abs().max() <= 1e-5
    parameters = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in shrunk.parameters()) == parameters - removed_parameters(model, keep)
    assert kept_encoder_weights(shrunk) < kept_encoder_weights(model)
    save_shrunk_model(shrunk, None, tmp_path, {"method": "spp"})
    reloaded = getattr(transformers, AUTO[BUILDERS[name][1]]).from_pretrained(tmp_path, trust_remote_code=True)
    assert (logits(reloaded.eval(), batch) - expected).abs().max() <= 1e-5


@pytest.mark.parametrize("name", ROTARY_FAMILIES)
def test_spp_units_of_rotary_grouped_families_are_pairs_of_key_value_heads(name):
    """A query-key unit is a rotated pair of a key-value head's dimensions; per-head masks are refused in one
    line before any search (each head would keep its own rotary frequencies)."""
    from pruneformer.compress.paired import layers_of
    from pruneformer.errors import RecipeError
    from pruneformer.methods.spp.search import SPPSearch

    model = tiny_family_model(name)
    layer = layers_of(model)[0]  # hidden 64, 4 heads of 16, 2 KV heads
    assert (layer.mask_shape("qk", "shared"), layer.mask_shape("qk", "head"), layer.mask_shape("vo", "head")) == \
        ((8,), (2, 8), (2, 16))
    assert layer.qk_dims(torch.tensor([True] + [False] * 6 + [True])) == [0, 7, 8, 15]
    with pytest.raises(RecipeError) as err:
        SPPSearch(granularity="head").attach(model, resolve_targets(model))
    assert "rotary" in str(err.value) and "granularity: shared" in str(err.value) and "\n" not in str(err.value)


def test_deberta_v2_gets_nm_masks_through_its_roles_and_refuses_a_cut():
    from pruneformer.core.patterns import parse_pattern

    torch.manual_seed(0)
    model = transformers.DebertaV2ForSequenceClassification(transformers.DebertaV2Config(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=100,
        num_labels=2)).eval()
    targets = resolve_targets(model)
    assert len(targets) == 12 and targets[0].name.endswith("attention.self.query_proj")
    pattern = parse_pattern("2:4")
    with torch.no_grad():
        for t in targets:
            t.linear_weight.mul_(pattern.mask(t.linear_weight))
    assert all(pattern.satisfied(t.linear_weight) for t in targets)
    assert float(targets[0].linear_weight.eq(0).float().mean()) >= 0.5
    with pytest.raises(ModelError) as err:
        check_compressible(model)
    assert "deberta-v2" in str(err.value) and "relative-position" in str(err.value) and "\n" not in str(err.value)


NO_CUT = {"modernbert": ("Wqkv", 8), "albert": ("LayerNorm", 6), "deberta-v2": ("relative-position", 12)}


@pytest.mark.parametrize("model_type", sorted(NO_CUT))
def test_encoders_without_a_cut_prune_to_nm_export_and_refuse_a_cut(model_type, tiny_task, tmp_path):
    """ModernBERT (fused Wqkv and GLU Wi, rotary), ALBERT (one layer shared by every depth) and DeBERTa-v2
    (disentangled attention): ``prune`` with
    N:M masks end to end, the saved model keeps 2:4, exports to ONNX with parity; a physical cut is refused
    in one line naming why."""
    from conftest import make_tiny_model_dir

    from pruneformer.deploy.export import export_model
    from pruneformer.models.saved import load_pruned_model
    from pruneformer.runs.pipeline import run
    from pruneformer.runs.recipe import build_recipe

    source = make_tiny_model_dir(tmp_path / model_type, model_type=model_type)
    recipe = build_recipe({"model": str(source), "output_dir": str(tmp_path / "run"), "seed": 0,
                           "data": {"source": str(tiny_task["train"]), "max_length": 16},
                           "train": {"batch_size": 16, "checkpoint_every": 100},
                           "dense": {"epochs": 1.0, "lr": 1e-3},
                           "prune": {"method": "magnitude-retrain", "pattern": "2:4", "epochs": 1.0, "lr": 1e-3}})
    report = run(recipe, progress=False, log=lambda _: None)
    model, _, _ = load_pruned_model(report["model_dir"])
    targets = resolve_targets(model)
    assert len(targets) == NO_CUT[model_type][1]
    zeros = [float(t.linear_weight.eq(0).float().view(-1, 4).sum(1).min()) for t in targets]
    assert min(zeros) >= 2  # every group of 4 holds at least 2 zeros
    record = export_model(report["model_dir"], tmp_path / "onnx", quantize="int8", log=lambda line: None)
    assert record["check"]["fp32"]["max_abs_diff"] <= 1e-5
    with pytest.raises(ModelError) as err:
        check_compressible(model)
    assert model_type in str(err.value) and NO_CUT[model_type][0] in str(err.value)
    assert "\n" not in str(err.value)


def test_unsupported_layouts_are_refused_in_one_line_naming_why():
    from pruneformer.compress.paired import layers_of
    from pruneformer.families import family_for_type

    gpt2 = transformers.GPT2ForSequenceClassification(transformers.GPT2Config(n_embd=64, n_layer=2, n_head=4))
    with pytest.raises(ModelError) as err:  # SPP's search asks this before any step
        layers_of(gpt2)
    assert "c_attn" in str(err.value) and "--include" not in str(err.value) and "\n" not in str(err.value)

    with pytest.raises(ModelError) as err:
        family_for_type("swin")
    assert "swin" in str(err.value) and "patch merging" in str(err.value) and "\n" not in str(err.value)
    albert = transformers.AlbertForSequenceClassification(transformers.AlbertConfig(
        vocab_size=100, hidden_size=64, embedding_size=32, num_hidden_layers=4, num_hidden_groups=2,
        num_attention_heads=4, intermediate_size=64))
    with pytest.raises(ModelError) as err:
        resolve_targets(albert)
    assert "num_hidden_groups=2" in str(err.value) and "\n" not in str(err.value)
