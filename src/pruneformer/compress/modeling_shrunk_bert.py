"""A BERT encoder in which every layer may have its own shape: the model a structured pruning run leaves.

This file is self-contained on purpose: it imports only torch and transformers, never pruneformer. Saving a
shrunk model copies it into the model directory and points ``auto_map`` in ``config.json`` at it, so

    AutoModelForSequenceClassification.from_pretrained(directory, trust_remote_code=True)

loads the model with plain transformers (offline, from a local directory). transformers' own BERT cannot
represent it: its config has one head count and one FFN width for all layers, and transformers 5 has no
``prune_heads`` (its ``head_mask`` argument is accepted and ignored).

Per layer ``i`` the config gives

* ``layer_num_heads[i]``: attention heads kept (0: the attention block is gone; its output is the bias),
* ``layer_qk_head_dim[i]`` / ``layer_v_head_dim[i]``: per-head width of query/key and of value,
* ``layer_intermediate_size[i]``: FFN units kept (0: the FFN is gone; its output is the bias),
* ``layer_attn_out_rows[i]`` / ``layer_ffn_out_rows[i]``: kept output rows of the attention-output and
  FFN-out Linear (None: all). That Linear then has fewer outputs; its result is scattered into the
  hidden size and added to the full-size bias, so rows whose weights were zero are removed exactly.

The attention scale stays 1/sqrt(``original_head_dim``), the head width of the model before pruning,
so that removing query/key dimensions leaves the attention scores unchanged.
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput
from transformers.models.bert.modeling_bert import BertEmbeddings, BertPooler


def _exporting() -> bool:
    """True inside ``torch.export`` (the ONNX exporter's first step); False on torch versions without the flag."""
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    return bool(is_exporting and is_exporting())


class ShrunkBertConfig(BertConfig):
    """BertConfig plus per-layer shapes; missing lists mean "as in the dense BERT"."""

    model_type = "shrunk-bert"

    layer_num_heads: list[int] | None = None
    layer_qk_head_dim: list[int] | None = None
    layer_v_head_dim: list[int] | None = None
    layer_intermediate_size: list[int] | None = None
    layer_attn_out_rows: list[list[int] | None] | None = None
    layer_ffn_out_rows: list[list[int] | None] | None = None
    original_head_dim: int | None = None

    def __post_init__(self, **kwargs):
        n = self.num_hidden_layers
        head_dim = self.hidden_size // self.num_attention_heads
        if self.original_head_dim is None:
            self.original_head_dim = head_dim
        defaults = {
            "layer_num_heads": self.num_attention_heads, "layer_qk_head_dim": head_dim,
            "layer_v_head_dim": head_dim, "layer_intermediate_size": self.intermediate_size,
            "layer_attn_out_rows": None, "layer_ffn_out_rows": None,
        }
        for name, default in defaults.items():
            value = getattr(self, name)
            value = [default] * n if value is None else list(value)
            if len(value) != n:
                raise ValueError(f"{name} has {len(value)} entries for {n} layers")
            setattr(self, name, value)
        super().__post_init__(**kwargs)


class ShrunkOutput(nn.Module):
    """Projection back into the hidden size, residual and LayerNorm (BERT's SelfOutput / Output).

    With ``rows`` the Linear computes only those output rows; the rest of the hidden vector is the bias.
    """

    def __init__(self, config: ShrunkBertConfig, in_features: int, rows: list[int] | None) -> None:
        super().__init__()
        hidden = config.hidden_size
        self.dense = nn.Linear(in_features, hidden if rows is None else len(rows), bias=rows is None)
        self.bias = nn.Parameter(torch.zeros(hidden)) if rows is not None else None
        self.kept_rows = list(rows) if rows is not None else []
        self.register_buffer("rows", torch.tensor(self.kept_rows, dtype=torch.long), persistent=False)
        self.LayerNorm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        out = self.dense(hidden_states)
        if self.bias is not None:
            full = self.bias.expand(*out.shape[:-1], self.bias.shape[0])
            out = torch.index_add(full, -1, self.rows, out)
        return self.LayerNorm(self.dropout(out) + input_tensor)


class ShrunkSelfAttention(nn.Module):
    """Multi-head self-attention with ``heads`` heads of query/key width ``qk`` and value width ``v``."""

    def __init__(self, config: ShrunkBertConfig, heads: int, qk: int, v: int) -> None:
        super().__init__()
        self.heads, self.qk, self.v = heads, qk, v
        self.scaling = config.original_head_dim ** -0.5
        self.query = nn.Linear(config.hidden_size, heads * qk)
        self.key = nn.Linear(config.hidden_size, heads * qk)
        self.value = nn.Linear(config.hidden_size, heads * v)
        self.dropout_p = config.attention_probs_dropout_prob

    def forward(self, hidden_states: torch.Tensor, mask: torch.Tensor | None, output_attentions: bool):
        batch, length = hidden_states.shape[:2]
        if self.heads == 0:
            return hidden_states.new_zeros(batch, length, 0), None
        q = self.query(hidden_states).view(batch, length, self.heads, self.qk).transpose(1, 2)
        k = self.key(hidden_states).view(batch, length, self.heads, self.qk).transpose(1, 2)
        v = self.value(hidden_states).view(batch, length, self.heads, self.v).transpose(1, 2)
        dropout = self.dropout_p if self.training else 0.0
        probs = None
        if output_attentions or self.qk == 0 or self.v == 0:
            scores = torch.matmul(q, k.transpose(-1, -2)) * self.scaling
            if mask is not None:
                scores = scores + mask
            probs = scores.softmax(-1)
            context = torch.matmul(F.dropout(probs, dropout, self.training), v)
        else:
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=self.scaling)
        return context.transpose(1, 2).reshape(batch, length, self.heads * self.v), probs


class ShrunkAttention(nn.Module):
    def __init__(self, config: ShrunkBertConfig, index: int) -> None:
        super().__init__()
        heads, v = config.layer_num_heads[index], config.layer_v_head_dim[index]
        self.self = ShrunkSelfAttention(config, heads, config.layer_qk_head_dim[index], v)
        self.output = ShrunkOutput(config, heads * v, config.layer_attn_out_rows[index])

    def forward(self, hidden_states, mask, output_attentions):
        context, probs = self.self(hidden_states, mask, output_attentions)
        return self.output(context, hidden_states), probs


class ShrunkIntermediate(nn.Module):
    def __init__(self, config: ShrunkBertConfig, index: int) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.layer_intermediate_size[index])
        self.intermediate_act_fn = ACT2FN[config.hidden_act] if isinstance(config.hidden_act, str) else config.hidden_act

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(hidden_states))


class ShrunkLayer(nn.Module):
    def __init__(self, config: ShrunkBertConfig, index: int) -> None:
        super().__init__()
        self.attention = ShrunkAttention(config, index)
        self.intermediate = ShrunkIntermediate(config, index)
        self.output = ShrunkOutput(config, config.layer_intermediate_size[index], config.layer_ffn_out_rows[index])

    def forward(self, hidden_states, mask, output_attentions):
        attention_output, probs = self.attention(hidden_states, mask, output_attentions)
        return self.output(self.intermediate(attention_output), attention_output), probs


class ShrunkEncoder(nn.Module):
    def __init__(self, config: ShrunkBertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(ShrunkLayer(config, i) for i in range(config.num_hidden_layers))


class ShrunkBertPreTrainedModel(PreTrainedModel):
    config_class = ShrunkBertConfig
    base_model_prefix = "bert"
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        # transformers' init functions skip tensors already loaded from the checkpoint
        if isinstance(module, ShrunkOutput):  # from_pretrained materialises buffers empty: refill them
            init.copy_(module.rows, torch.tensor(module.kept_rows, dtype=torch.long))
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, BertEmbeddings):
            init.copy_(module.position_ids, torch.arange(module.position_ids.shape[-1]).expand((1, -1)))
            init.zeros_(module.token_type_ids)


class ShrunkBertModel(ShrunkBertPreTrainedModel):
    """Embeddings, the per-layer-shaped encoder and BERT's pooler."""

    def __init__(self, config: ShrunkBertConfig, add_pooling_layer: bool = True) -> None:
        super().__init__(config)
        self.embeddings = BertEmbeddings(config)
        self.encoder = ShrunkEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs):
        output_attentions = bool(output_attentions if output_attentions is not None else self.config.output_attentions)
        output_hidden_states = bool(output_hidden_states if output_hidden_states is not None
                                    else self.config.output_hidden_states)
        hidden = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids, position_ids=position_ids,
                                 inputs_embeds=inputs_embeds)
        mask = None
        # an all-ones mask is skipped in eager mode (SDPA's fastest path); an exported graph (ONNX) always
        # applies it, since the check depends on the data and an export must serve any input
        if attention_mask is not None and (_exporting() or not bool(attention_mask.all())):
            keep = attention_mask[:, None, None, :].to(hidden.dtype)
            mask = (1.0 - keep) * torch.finfo(hidden.dtype).min
            if _exporting():  # ONNX's Attention op wants the query length spelled out: [batch, 1, query, key]
                mask = mask.expand(-1, -1, hidden.shape[1], -1)
        all_hidden = (hidden,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.encoder.layer:
            hidden, probs = layer(hidden, mask, output_attentions)
            if output_hidden_states:
                all_hidden += (hidden,)
            if output_attentions:
                all_attentions += (probs,)
        pooled = self.pooler(hidden) if self.pooler is not None else None
        return BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=pooled,
                                          hidden_states=all_hidden, attentions=all_attentions)


class ShrunkBertForSequenceClassification(ShrunkBertPreTrainedModel):
    """BERT's sequence classifier (pooler, dropout, Linear) on the shrunk encoder; same losses."""

    def __init__(self, config: ShrunkBertConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = ShrunkBertModel(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                return_dict=None, **kwargs):
        outputs = self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                            position_ids=position_ids, inputs_embeds=inputs_embeds,
                            output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        logits = self.classifier(self.dropout(outputs.pooler_output))
        loss = None
        if labels is not None:
            problem = self.config.problem_type
            if problem is None:
                problem = "regression" if self.num_labels == 1 else (
                    "single_label_classification" if labels.dtype in (torch.long, torch.int) else "multi_label_classification")
            if problem == "regression":
                loss = F.mse_loss(logits.squeeze(), labels.squeeze()) if self.num_labels == 1 else F.mse_loss(logits, labels)
            elif problem == "single_label_classification":
                loss = F.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
            else:
                loss = F.binary_cross_entropy_with_logits(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                        attentions=outputs.attentions)


def count_encoder_parameters(config: ShrunkBertConfig) -> int:
    """Weights of the encoder Linears (no biases), from the config alone."""
    hidden, total = config.hidden_size, 0
    for i in range(config.num_hidden_layers):
        heads, qk, v = config.layer_num_heads[i], config.layer_qk_head_dim[i], config.layer_v_head_dim[i]
        ffn = config.layer_intermediate_size[i]
        attn_rows = config.layer_attn_out_rows[i]
        ffn_rows = config.layer_ffn_out_rows[i]
        total += hidden * heads * (2 * qk + v)
        total += heads * v * (hidden if attn_rows is None else len(attn_rows))
        total += hidden * ffn + ffn * (hidden if ffn_rows is None else len(ffn_rows))
    return total


__all__ = ["ShrunkBertConfig", "ShrunkBertModel", "ShrunkBertForSequenceClassification", "count_encoder_parameters"]
