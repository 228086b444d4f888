"""Measuring models (size, MACs, latency, accuracy through ONNX Runtime) and writing reports."""
