"""pruneformer: prune pretrained transformers into hardware-friendly sparse models."""

__version__ = "0.1.0"
