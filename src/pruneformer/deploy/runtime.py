"""Exported models in ONNX Runtime: scoring and inspecting exactly what a user deploys.

An exported model is a directory written by :func:`pruneformer.deploy.export.export_model` (``model.onnx``, maybe
``model.int8.onnx``, the tokenizer, ``export.json``) or one of its ``.onnx`` files. :class:`OnnxClassifier`
wraps an ONNX Runtime session as a module that returns logits like a transformers classifier, so
:func:`pruneformer.train.evaluation.evaluate` scores it with the same batching, padding and metrics as a PyTorch
model. ``pruneformer eval`` and ``inspect`` call :func:`load_for_scoring` / :func:`layer_weights`, which
take either kind of model.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from ..errors import ExportError

EXPORT_FILE = "export.json"
ONNX_FILE = "model.onnx"
#: The export check's tolerance on logits (max abs difference), the issue's bar for fp32 parity.
TOLERANCE = 1e-4


#: ONNX Runtime graph fusions pruneformer's sessions turn off. ORT 1.32's CPU ``SkipLayerNormalization``
#: kernel ran 3.1x slower than the ``Add`` + ``LayerNormalization`` it replaces (5.3 against 1.7 ms on a
#: [4096, 384] input, 2 threads, AMD EPYC with AVX2); without the fusion the MLPruning 0.2 int8 MiniLM ran
#: in 137 instead of 183 ms at batch 32, length 128. Use the same when you deploy:
#: ``onnxruntime.InferenceSession(path, options, disabled_optimizers=DISABLED_FUSIONS)``.
DISABLED_FUSIONS = ("SkipLayerNormFusion",)


def session(path: str | Path, threads: int | None = None, spin: bool = True, profile: bool = False):
    """An ONNX Runtime CPU session (all graph optimizations on but :data:`DISABLED_FUSIONS`), with
    ``threads`` intra-op threads.

    ``spin=False`` stops idle worker threads from busy-waiting after a run: a benchmark that interleaves
    several sessions and PyTorch on few cores would otherwise charge one model's spinning to the next.
    ``profile=True`` records every node's kernel time (``session.end_profiling()`` writes the JSON trace).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # warnings about hardware-specific fusions are not the user's concern
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile:  # the trace goes to the temporary directory, not the caller's working directory
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tempfile.gettempdir()) / "pruneformer-ort-profile")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"],
                                    disabled_optimizers=list(DISABLED_FUSIONS))
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own kinds
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportError(f"ONNX Runtime cannot load '{path}': {first}",
                          "export the model again with `pruneformer export`") from exc


def node_kernel_times(sess) -> list[tuple[str, float]]:
    """(operator type, microseconds) of every node run by a ``session(..., profile=True)`` so far; ends its
    profiling and deletes the trace file."""
    trace = Path(sess.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    return [(e["args"]["op_name"], e["dur"]) for e in events
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]


def run_session(sess, batch: dict[str, torch.Tensor]) -> np.ndarray:
    """Logits of one batch; feeds exactly the inputs the graph declares (token ids int64, pixels float32)."""
    feed = {i.name: batch[i.name].cpu().numpy().astype(np.float32 if i.type == "tensor(float)" else np.int64)
            for i in sess.get_inputs()}
    return sess.run(None, feed)[0]


@torch.no_grad()
def compare(model: nn.Module, sess, batches: Sequence[dict[str, torch.Tensor]]) -> dict[str, Any]:
    """Max abs difference of logits and prediction agreement between PyTorch and ONNX Runtime."""
    model.eval()
    diff, agree, total = 0.0, 0, 0
    for batch in batches:
        expected = model(**batch).logits.float().numpy()
        got = run_session(sess, batch)
        diff = max(diff, float(np.abs(expected - got).max()) if np.isfinite(got).all() else float("inf"))
        if expected.shape[-1] > 1:
            agree += int((expected.argmax(-1) == got.argmax(-1)).sum())
        total += len(expected)
    return {"max_abs_diff": diff, "predictions_agree": agree, "examples": total}


def split_batches(dev, tokenizer, batch_size: int = 64) -> list[dict[str, torch.Tensor]]:
    """A tokenized split as padded model-input batches (labels dropped), for :func:`compare`."""
    from transformers import DataCollatorWithPadding

    from ..train.evaluation import iterate_batches

    examples = dev.to_list() if hasattr(dev, "to_list") else list(dev)
    names = input_names(tokenizer)
    collator = DataCollatorWithPadding(tokenizer)
    return [{k: v for k, v in b.items() if k in names}
            for b in iterate_batches(examples, range(len(examples)), batch_size, collator)]


def score(path: Path, dev, tokenizer, metrics: Sequence[str], collator: Any = None) -> dict[str, float]:
    """The task's metrics of an ONNX graph on a tokenized split (or, with ``collator``, any prepared split: an
    image bundle and its :class:`~pruneformer.data.images.ImageCollator`), through pruneformer's own evaluation."""
    from transformers import DataCollatorWithPadding

    from ..train.evaluation import evaluate

    return evaluate(OnnxClassifier(path), dev, collator or DataCollatorWithPadding(tokenizer), metrics)


#: Inputs a classifier's ``forward`` takes from a tokenizer, in the order they are exported.
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def input_names(tokenizer: Any) -> list[str]:
    """The model inputs the tokenizer produces, in :data:`MODEL_INPUTS` order."""
    produced = set(getattr(tokenizer, "model_input_names", MODEL_INPUTS))
    return [name for name in MODEL_INPUTS if name in produced]



def onnx_path(path: str | Path) -> Path | None:
    """The ONNX file ``path`` names: the file itself, or a directory's ``model.onnx``; None if neither."""
    path = Path(path)
    if path.suffix == ".onnx":
        return path
    return path / ONNX_FILE if (path / ONNX_FILE).is_file() else None


def is_exported(path: str | Path) -> bool:
    return onnx_path(path) is not None


class OnnxClassifier(nn.Module):
    """An ONNX Runtime session as a sequence classifier: ``model(**batch).logits``, on CPU.

    It has no parameters; ``train()`` / ``eval()`` are accepted and change nothing (the graph is fixed).
    """

    def __init__(self, path: str | Path, threads: int | None = None, spin: bool = True, profile: bool = False) -> None:
        super().__init__()
        self.path = Path(path)
        if not self.path.is_file():
            raise ExportError(f"ONNX file '{path}' does not exist.", "pass a file or directory written by "
                              "`pruneformer export`")
        self.session = session(self.path, threads, spin, profile)
        self.input_names = [i.name for i in self.session.get_inputs()]

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None,
                **_: Any) -> SequenceClassifierOutput:
        if pixel_values is not None:  # an image classifier's graph
            feed = {"pixel_values": np.asarray(pixel_values.cpu(), dtype=np.float32)}
            return SequenceClassifierOutput(logits=torch.from_numpy(self.session.run(None, feed)[0]))
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        defaults = {"attention_mask": torch.ones_like, "token_type_ids": torch.zeros_like}  # as transformers does
        feed = {name: np.asarray((given[name] if given[name] is not None else defaults[name](input_ids)).cpu(),
                                 dtype=np.int64) for name in self.input_names}
        return SequenceClassifierOutput(logits=torch.from_numpy(self.session.run(None, feed)[0]))


def _vocabulary_rows(model_file: Path) -> int | None:
    """Rows of the word-embedding table: the initializer that a Gather on ``input_ids`` reads."""
    import onnx

    graph = onnx.load(str(model_file), load_external_data=False).graph
    tables = {i.name: i for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Gather" and len(node.input) > 1 and node.input[1] == "input_ids" \
                and node.input[0] in tables:
            return int(tables[node.input[0]].dims[0])
    return None


def check_tokenizer(classifier: OnnxClassifier, tokenizer: Any) -> None:
    """One-line error when the graph wants inputs the tokenizer does not produce, inputs that are not token
    ids, or a smaller vocabulary than the tokenizer's."""
    produced = set(getattr(tokenizer, "model_input_names", []))
    wrong = [i for i in classifier.session.get_inputs()
             if i.name not in produced or i.type != "tensor(int64)" or len(i.shape) != 2]
    if wrong or "input_ids" not in classifier.input_names:
        described = ", ".join(f"{i.name} ({i.type}, rank {len(i.shape)})" for i in classifier.session.get_inputs())
        raise ExportError(f"The inputs of {classifier.path.name} ({described}) do not match the tokenizer beside it, "
                          f"which produces {', '.join(sorted(produced)) or 'nothing'} (int64 [batch, sequence]).",
                          "export the model with `pruneformer export`, which saves its own tokenizer beside it")
    rows = _vocabulary_rows(classifier.path)
    if rows is not None and len(tokenizer) > rows:
        raise ExportError(f"{classifier.path.name} embeds {rows} tokens but the tokenizer beside it has {len(tokenizer)}.",
                          "use the tokenizer the model was exported with (`pruneformer export` saves it beside the file)")


def load_onnx_classifier(path: str | Path, threads: int | None = None) -> tuple[OnnxClassifier, Any, dict | None]:
    """(classifier, tokenizer, export record) of an exported model; the tokenizer is the one beside the file."""
    from transformers import AutoTokenizer

    model_file = onnx_path(path)
    if model_file is None:
        raise ExportError(f"'{path}' holds no {ONNX_FILE}.", "pass a directory or .onnx file written by `pruneformer export`")
    classifier = OnnxClassifier(model_file, threads)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_file.parent, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - a missing or broken tokenizer raises many kinds
        raise ExportError(f"No usable tokenizer beside {model_file} ({type(exc).__name__}).",
                          "export with `pruneformer export`, which saves the tokenizer beside the model") from exc
    check_tokenizer(classifier, tokenizer)
    record_file = model_file.parent / EXPORT_FILE
    record = json.loads(record_file.read_text()) if record_file.is_file() else None
    return classifier, tokenizer, record


def load_for_scoring(path: str | Path, trust_pickle: bool = False) -> tuple[nn.Module, Any, dict | None]:
    """(model, tokenizer, pruning record) of an exported model (ONNX Runtime) or a saved one (PyTorch)."""
    if is_exported(path):
        classifier, tokenizer, record = load_onnx_classifier(path)
        return classifier, tokenizer, (record or {}).get("pruning")
    from ..models.saved import load_pruned_model

    return load_pruned_model(path, trust_pickle=trust_pickle)


def exported_weights(path: str | Path) -> tuple[list[tuple[str, str, torch.Tensor]], dict | None]:
    """``(layer, role, weight [out, in])`` of every targeted Linear in an exported graph, and its pruning record.

    ``export.json`` names each layer's weight initializer in each file; in an int8 graph it is the quantized
    tensor (symmetric, zero point 0: a zero stays exactly zero), whose int8 values are returned, so sparsity
    and N:M checks read what the deployed file holds.
    """
    import onnx
    from onnx import numpy_helper

    model_file = onnx_path(path)
    record_file = model_file.parent / EXPORT_FILE if model_file is not None else None
    if record_file is None or not record_file.is_file():
        raise ExportError(f"'{path}' has no {EXPORT_FILE} beside its ONNX file, so its layers cannot be named.",
                          "inspect a directory written by `pruneformer export`")
    record = json.loads(record_file.read_text())
    tables = {i.name: i for i in onnx.load(str(model_file)).graph.initializer}
    rows = []
    for layer in record["layers"]:
        where = layer["weights"].get(model_file.name)
        tensor = tables.get(where["initializer"]) if where else None
        if tensor is None:
            raise ExportError(f"{model_file.name} has no weight recorded for layer {layer['layer']} in {EXPORT_FILE}.",
                              "inspect the files `pruneformer export` wrote, unchanged")
        weight = torch.from_numpy(numpy_helper.to_array(tensor).astype(np.float32))
        rows.append((layer["layer"], layer["role"], weight.T if where["transposed"] else weight))
    return rows, record.get("pruning")
