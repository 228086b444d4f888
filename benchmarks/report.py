"""report.md (and the terminal table): every variant against the reference (the teacher)."""
from __future__ import annotations


def _num(value, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def markdown_table(report: dict) -> str:
    ref = report["benchmark"].get("reference", "teacher")
    head = (f"| model | params (M) | MACs (M) | ONNX MB | accuracy | agree w/ {ref} | p50 ms | p90 ms "
            "| size × | MACs × | speed × | Δ acc (pts) |\n"
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
    rows = []
    for name, m in report["models"].items():
        r = m.get("vs_reference", {})
        agree = m.get("agreement_with_teacher", m.get("agreement_with_reference"))
        noisy = " ⚠" if m["latency_ms"].get("noisy") else ""
        rows.append(f"| {name} | {_num(m['params'] and m['params'] / 1e6, '.2f')} | "
                    f"{_num(m['macs'] and m['macs'] / 1e6, '.1f')} | {m['onnx_bytes'] / 1e6:.2f} | "
                    f"{m['accuracy']:.4f} | {agree:.4f} | {m['latency_ms']['p50']:.2f}{noisy} | "
                    f"{m['latency_ms']['p90']:.2f} | {r.get('size_x', 0):.1f} | {_num(r.get('macs_x'), '.1f')} | "
                    f"{r.get('speed_x', 0):.2f} | "
                    f"{100 * r.get('accuracy_delta', 0):+.1f} |")
    return head + "\n".join(rows) + "\n"


def markdown_report(report: dict) -> str:
    b, env = report["benchmark"], report["environment"]
    lines = ["# compress report", ""]
    if "dataset" in report:
        d = report["dataset"]
        lines.append(f"Dataset **{d['name']}**: {len(d['classes'])} classes, {d['train_size']} train / "
                     f"{d['val_size']} val images.")
    lines += [
        f"Latency: ONNX Runtime {env['onnxruntime']} on {env['cpu']} ({', '.join(env['isa']) or 'no SIMD flags read'}), "
        f"{b['threads']} threads, batch sizes {b['batch_sizes']}, {b['warmup']} warm-up + {b['runs']} timed "
        "rounds, models interleaved. Accuracy: top-1 on val through ONNX Runtime.", "",
        markdown_table(report),
        f"Size, MACs and speed × are the {b['reference']}'s figure over the model's (speed: median of same-round "
        f"time ratios at batch {b['batch_sizes'][0]}); a MACs cut is not a latency cut, so compare those two columns; Δ acc is against the {b['reference']}. ⚠ marks a noisy "
        "latency (IQR/median > 20%).", "",
        "| model | " + " | ".join(f"p50 ms @ batch {x}" for x in b["batch_sizes"]) + " | images/s | ECE |",
        "| --- | " + " | ".join("---:" for _ in b["batch_sizes"]) + " | ---: | ---: |",
    ]
    for name, m in report["models"].items():
        cells = " | ".join(f"{m['latency_ms_by_batch'][str(x)]['p50']:.2f}" for x in b["batch_sizes"])
        lines.append(f"| {name} | {cells} | {m['throughput_ips']:.0f} | {m['ece']:.3f} |")
    q = report.get("quantization")
    if q:
        lines += ["", f"int8 layouts measured against {q['source']} (fp32: {q['fp32']['p50_ms']:.2f} ms, "
                  f"accuracy {q['fp32']['accuracy']:.4f}); chosen: **{q['chosen']}** ({q['reason']}).", "",
                  "| candidate | p50 ms @ batch 1 | accuracy | agreement with fp32 | MB |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        lines += [f"| {c['name']} | {c['p50_ms']:.2f} | {c['accuracy']:.4f} | {c['agreement_with_source']:.4f} | "
                  f"{c['onnx_bytes'] / 1e6:.2f} |" for c in q["candidates"]]
    gpu = {n: m["gpu"] for n, m in report["models"].items() if "gpu" in m}
    if gpu:
        first = next(iter(gpu.values()))
        lines += ["", f"PyTorch fp32 on {first['device']} (CUDA events):", "",
                  "| model | " + " | ".join(f"p50 ms @ batch {x}" for x in first["latency_ms_by_batch"]) + " | images/s |",
                  "| --- | " + " | ".join("---:" for _ in first["latency_ms_by_batch"]) + " | ---: |"]
        for name, g in gpu.items():
            cells = " | ".join(f"{s['p50']:.3f}" for s in g["latency_ms_by_batch"].values())
            lines.append(f"| {name} | {cells} | {g['throughput_ips']:.0f} |")
    lines.append("")
    for w in report.get("warnings", []):
        lines.append(f"**Warning:** {w}")
    return "\n".join(lines) + "\n"
