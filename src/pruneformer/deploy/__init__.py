"""Deployment: export to ONNX (``export``), int8 quantization (``quantize``), running and profiling in ONNX
Runtime (``runtime``), and latency measurement that names the CPU's instruction set (``latency``,
``hardware``)."""
