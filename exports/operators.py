"""Which operators an ONNX file needs, read from its graph without torch or a session.

A client runtime loads a file only if it implements every operator in it, so the operator set is
part of what a model promises its users: the gate fails on an operator that was not there before,
and the quantize stage keeps vendor operators (e.g. ONNX Runtime's com.microsoft QLinearAdd) out
of a portable deployable.
"""
from __future__ import annotations

from pathlib import Path

import onnx

STANDARD_DOMAINS = ("", "ai.onnx")  # the ONNX standard operator set; anything else is a vendor's


def operator_set(path: str | Path) -> list[str]:
    """Sorted operator names the file's graph uses: `Conv` for standard ONNX, `domain:Op` otherwise."""
    model = onnx.load(str(path), load_external_data=False)
    return sorted({n.op_type if n.domain in STANDARD_DOMAINS else f"{n.domain}:{n.op_type}" for n in model.graph.node})


def vendor_domains(path: str | Path) -> list[str]:
    """Operator domains outside the ONNX standard that the model needs: such a file loads only in
    that vendor's runtime."""
    return sorted({op.rsplit(":", 1)[0] for op in operator_set(path) if ":" in op})
