"""What the gate found, figure by figure: typed rows with an enum verdict, and their table.

A row names its figure and batch size as fields, so nothing is parsed back out of a label.
"""
from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel


class Verdict(StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"  # outside its limit (for latency: with 95% confidence, on a quiet machine)
    INCONCLUSIVE = "INCONCLUSIVE"  # latency past the limit, but not with confidence, or timed on a busy machine
    MISSING = "MISSING"  # the baseline has it, this run does not: a failure
    NEW = "NEW"  # this run has it, the baseline does not
    INFO = "INFO"  # shown, not gated


FAILING = (Verdict.FAIL, Verdict.MISSING)


class Figure(StrEnum):
    MODEL = "model"
    ONNX_BYTES = "onnx_bytes"
    MACS = "macs"
    PARAMS = "params"
    OPERATORS = "operators"
    PAIRED_ACCURACY = "Δacc"  # a paired difference measured in one run (model minus `against`)
    ACCURACY = "accuracy"
    AGREEMENT = "agreement"  # top-1 agreement of another runtime with ONNX Runtime
    LATENCY = "latency"  # A/B: this run's p50 over the reference run's, same CPU, same session
    STORED_LATENCY_RATIO = "latency_ratio"  # the file's ratio to the teacher (another machine): INFO only


class Row(BaseModel):
    model: str
    figure: Figure
    batch: int | None = None
    against: str | None = None  # the other model of a paired difference; the runtime of an agreement
    baseline: float | int | str | None = None
    now: float | int | str | None = None
    change: str = "-"
    limit: str = "-"
    verdict: Verdict
    source: str = "baseline file"  # what `baseline` comes from: the baseline file or the reference run

    @property
    def label(self) -> str:
        text = self.figure.value
        if self.against:
            text += f" vs {self.against}" if self.figure is Figure.PAIRED_ACCURACY else f"@{self.against}"
        return text + (f"@{self.batch}" if self.batch is not None else "")


def failed(rows: list[Row]) -> bool:
    return any(r.verdict in FAILING for r in rows)


def render(rows: list[Row]) -> str:
    """The rows as an aligned text table."""
    def fmt(v):
        return "-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))
    table = [("model", "figure", "against", "baseline", "now", "change", "limit", "verdict")]
    table += [(r.model, r.label, r.source, fmt(r.baseline), fmt(r.now), r.change, r.limit, r.verdict.value)
              for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table)
