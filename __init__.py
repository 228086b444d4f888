"""compress: distil a big image classifier into small, deployable ONNX students.

The repository's top-level folders are this package's layers; each imports only those below it
(checked in CI by import-linter, see pyproject.toml):

    compress.pipeline    the top: command line, the stage runner, searches, sweeps
    compress.stages      one module per pipeline stage: the stage classes, composing library calls
    compress.gate        the CI gate: baseline file, typed rows, A/B latency against a reference run
    compress.methods     the library: distillation terms, training recipes, pruning, int8 search, QAT
    compress.reporting   report.md / report.html and the plots
    compress.measure     latency in fresh processes, busy-machine detection, accuracy and statistics
    compress.exports     what leaves PyTorch: ONNX, int8, ORT format, model card, client
    compress.core        config, data, models, the training loop, run directory, typed documents

The repository's benchmarks/ folder holds benchmark scripts and the CI's data; it is not installed.

Importing `compress` imports nothing heavy (no torch): the latency worker relies on that.
"""
from compress.core.provenance import version as _version

__version__ = _version()
