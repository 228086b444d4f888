"""report.json and report.md: every variant against the teacher, with ratios to the teacher."""
from __future__ import annotations


def add_ratios(models: dict[str, dict]) -> None:
    """size_x / speed_x / macs_x: how many times smaller, faster, cheaper than the teacher."""
    teacher = models.get("teacher")
    if not teacher:
        return
    for m in models.values():
        m["vs_teacher"] = {
            "size_x": teacher["onnx_bytes"] / m["onnx_bytes"],
            "speed_x": teacher["latency_ms"]["p50"] / m["latency_ms"]["p50"],
            "macs_x": teacher["macs"] / m["macs"],
            "accuracy_delta": m["accuracy"] - teacher["accuracy"],
        }


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f}"


def markdown_table(report: dict) -> str:
    head = ("| model | params (M) | MACs (M) | ONNX MB | accuracy | agree w/ teacher | p50 ms | p90 ms "
            "| size × | speed × | Δ acc (pts) |\n"
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
    rows = []
    for name, m in report["models"].items():
        r = m.get("vs_teacher", {})
        rows.append(f"| {name} | {m['params'] / 1e6:.2f} | {m['macs'] / 1e6:.1f} | {_mb(m['onnx_bytes'])} | "
                    f"{m['accuracy']:.4f} | {m['agreement_with_teacher']:.4f} | {m['latency_ms']['p50']:.2f} | "
                    f"{m['latency_ms']['p90']:.2f} | {r.get('size_x', 0):.1f} | {r.get('speed_x', 0):.2f} | "
                    f"{100 * r.get('accuracy_delta', 0):+.1f} |")
    return head + "\n".join(rows) + "\n"


def markdown_report(report: dict) -> str:
    d, b = report["dataset"], report["benchmark"]
    lines = [
        "# compress report", "",
        f"Dataset **{d['name']}**: {len(d['classes'])} classes, {d['train_size']} train / {d['val_size']} val images.",
        f"Latency: ONNX Runtime {b['onnxruntime']} on the CPU ({b['cpu']}), batch 1, {b['threads']} threads, "
        f"{b['warmup']} warm-up + {b['runs']} timed runs. Accuracy: top-1 on val through ONNX Runtime.", "",
        markdown_table(report),
        "Ratios (×) are the teacher's figure divided by the model's; Δ acc is against the teacher.", "",
    ]
    for w in report.get("warnings", []):
        lines.append(f"**Warning:** {w}")
    return "\n".join(lines) + "\n"
