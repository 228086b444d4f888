"""compress: distil a big image classifier into small, deployable ONNX students.

The repository's top-level folders are this package's layers; each imports only those below it
(checked in CI by import-linter, see pyproject.toml):

    compress.pipeline    the top: command line, the stage runner, sweeps
    compress.stages      one module per pipeline stage: the stage classes, composing library calls
    compress.methods     the library: distillation terms, training recipes, pruning, int8 search, QAT
    compress.benchmarks  measuring and judging: latency, accuracy, report, the CI gate
    compress.exports     what leaves PyTorch: ONNX, int8, ORT format, model card, client
    compress.core        config, data, models, the training loop, run directory, typed documents

Importing `compress` imports nothing heavy (no torch): the latency worker relies on that.
"""
from compress.core.provenance import version as _version

__version__ = _version()
