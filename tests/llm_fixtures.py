"""Tiny random decoder LMs (Llama and GPT-2 configs) for the LLM tests, built in well under a second."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

VOCAB_SIZE = 64


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    """hidden 32, 2 layers, 4 heads (2 KV heads), FFN 64: 7 target Linears per layer."""
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB_SIZE, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config).eval()


def tiny_gpt2(seed: int = 0) -> GPT2LMHeadModel:
    """hidden 32, 2 layers, 4 heads, FFN 128: 4 Conv1D targets per layer (c_attn is Q, K, V fused)."""
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=VOCAB_SIZE, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                        bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config).eval()


def random_tokens(n: int, seq_len: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB_SIZE, (n, seq_len), generator=torch.Generator().manual_seed(seed))


def save_tiny_llama_dir(directory: Path, vocab: list[str]) -> Path:
    """A tiny Llama with a word-level (BERT) tokenizer over ``vocab``, saved as a local model directory."""
    from transformers import BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         pad_token_id=0, bos_token_id=2, eos_token_id=3)
    LlamaForCausalLM(config).save_pretrained(directory)
    BertTokenizerFast(vocab=str(directory / "vocab.txt"), do_lower_case=True).save_pretrained(directory)
    return directory
