"""Which compress made a file: the version and commit written into the package at build time
(setuptools-scm's version file), and the versions of the libraries that did the work.

Never asks git at run time: installed into a user's project, `git rev-parse` in the package's
folder would answer with the *user's* commit.
"""
from __future__ import annotations

import platform
from importlib import import_module


def _build_info() -> tuple[str, str | None]:
    try:
        generated = import_module("compress._version")  # written by setuptools-scm when installed
    except ImportError:
        return "0.0.0+unknown", None
    commit = getattr(generated, "commit_id", None)
    return generated.version, commit[1:] if commit and commit.startswith("g") else commit


def version() -> str:
    return _build_info()[0]


def git_commit() -> str | None:
    """The commit compress was built from (short hash), or None for a build without git."""
    return _build_info()[1]


def library_versions() -> dict[str, str]:
    """Versions of what trained, exported and measured the models (recorded in every manifest)."""
    import numpy
    import onnx
    import onnxruntime
    import torch
    import torch_pruning
    import torchvision
    return {"compress": version(), "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "torch_pruning": torch_pruning.__version__,
            "numpy": numpy.__version__}
