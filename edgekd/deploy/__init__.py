"""Deployment: target profiles, ONNX export, the op audit, EP support tables, parity, int8 quantization,
the mobile format."""
