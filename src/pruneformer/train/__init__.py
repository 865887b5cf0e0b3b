"""Training infrastructure every method runs on: the loop (``loop``) with its checkpoints, multi-process
state, divergence checks, distillation and evaluation, the layer-by-layer calibration pass of one-shot
methods, and the Hugging Face ``Trainer`` callback that drives the same lifecycle inside a user's Trainer."""
