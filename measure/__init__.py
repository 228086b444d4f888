"""Measuring ONNX files: interleaved latency in fresh torch-free processes, whether the machine was
busy meanwhile, accuracy with intervals and paired tests, other runtimes beside ONNX Runtime, and
the benchmark of a set of files (suite.py) the benchmark stage and `compress bench` run."""
