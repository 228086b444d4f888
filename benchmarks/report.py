"""report.md (and the terminal table): every variant against the reference (the teacher), each
accuracy with its 95% interval, paired verdicts in words, and a warning when the timing ran on
a busy machine."""
from __future__ import annotations

from compress.core.roster import BASELINE, TEACHER


def _num(value, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def _acc(m: dict) -> str:
    ci = m.get("accuracy_interval")
    return f"{m['accuracy']:.4f} [{ci['low']:.3f}, {ci['high']:.3f}]" if ci else f"{m['accuracy']:.4f}"


def busy(report: dict) -> dict | None:
    """The contention record when the timing ran on a busy machine, else None."""
    c = report.get("benchmark", {}).get("contention") or {}
    return c if c.get("busy") else None


def markdown_table(report: dict) -> str:
    ref = report["benchmark"].get("reference", TEACHER)
    flag = " ⚠busy" if busy(report) else ""
    head = (f"| model | params (M) | MACs (M) | ONNX MB | accuracy [95% CI] | agree w/ {ref} | p50 ms | p90 ms "
            "| size × | MACs × | speed × | Δ acc (pts) |\n"
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
    rows = []
    for name, m in report["models"].items():
        r = m.get("vs_reference", {})
        agree = m.get("agreement_with_teacher", m.get("agreement_with_reference"))
        noisy = " ⚠" if m["latency_ms"].get("noisy") or busy(report) else ""
        rows.append(f"| {name} | {_num(m['params'] and m['params'] / 1e6, '.2f')} | "
                    f"{_num(m['macs'] and m['macs'] / 1e6, '.1f')} | {m['onnx_bytes'] / 1e6:.2f} | "
                    f"{_acc(m)} | {agree:.4f} | {m['latency_ms']['p50']:.2f}{noisy} | "
                    f"{m['latency_ms']['p90']:.2f} | {r.get('size_x', 0):.1f} | {_num(r.get('macs_x'), '.1f')} | "
                    f"{r.get('speed_x', 0):.2f}{flag} | "
                    f"{100 * r.get('accuracy_delta', 0):+.1f} |")
    return head + "\n".join(rows) + "\n"


def comparison_sentence(c: dict) -> str:
    """"student vs baseline: not distinguishable at 95% (Δ −0.55 pts; ...; McNemar exact p = 0.41)"."""
    return (f"{c['model']} vs {c['against']}: **{c['verdict']}** at 95% (Δ {100 * c['delta']:+.2f} points on "
            f"{c['n']} images; right only for {c['model']}: {c['only_a_right']}, only for {c['against']}: "
            f"{c['only_b_right']}; McNemar exact p = {c['p_value']:.3g})")


def headline(report: dict) -> list[str]:
    """Plain-words findings: did distillation beat the CE baseline, what did each step cost."""
    lines = []
    for c in report.get("comparisons", []):
        if c["against"] == BASELINE:
            words = {"better": "Distillation **beat** the CE-only baseline",
                     "worse": "Distillation did **worse** than the CE-only baseline",
                     "not distinguishable": "Distillation **did not measurably beat** the CE-only baseline"}
            lines.append(f"{words[c['verdict']]}: {comparison_sentence(c)}.")
    lines += [f"{comparison_sentence(c)}." for c in report.get("comparisons", []) if c["against"] != BASELINE]
    return lines


def figures_note(report: dict) -> str:
    d = report.get("dataset", {})
    split = d.get("figures_from", "val")
    if split == "test":
        return (f"Accuracy: top-1 on the **test split** ({d.get('test_size')} images) through ONNX Runtime; the val "
                f"split ({d.get('val_size')} images) made every choice (epochs, int8 layout, prune rounds), the "
                "test split none.")
    return (f"Accuracy: top-1 on the **val split** ({d.get('val_size', '?')} images) through ONNX Runtime. The data "
            "has too few images per class for a separate test split, so these figures were **also used for "
            "selection** (int8 layout, prune rounds) and are optimistic.")


def contention_note(report: dict) -> str | None:
    c = busy(report)
    if not c:
        return None
    return ("⚠ **Timed on a busy machine**: " + "; ".join(c["reasons"]) + ". Speed-ups measured under load "
            "favour small models; re-measure on a quiet machine with `compress bench` before quoting them.")


def markdown_report(report: dict) -> str:
    b, env = report["benchmark"], report["environment"]
    lines = ["# compress report", ""]
    if "dataset" in report:
        d = report["dataset"]
        sizes = f"{d['train_size']} train / {d['val_size']} val" + (f" / {d['test_size']} test" if d.get("test_size")
                                                                   else "")
        lines.append(f"Dataset **{d['name']}**: {len(d['classes'])} classes, {sizes} images.")
        lines += ["", figures_note(report)]
    lines += [""] + headline(report) + [""]
    note = contention_note(report)
    if note:
        lines += [note, ""]
    lines += [
        f"Latency: ONNX Runtime {env['onnxruntime']} on {env['cpu']} ({', '.join(env['isa']) or 'no SIMD flags read'}), "
        f"{b['threads']} threads, batch sizes {b['batch_sizes']}, {b['warmup']} warm-up + {b['runs']} timed "
        "rounds, models interleaved.", "",
        markdown_table(report),
        f"Accuracy is followed by its 95% Wilson interval. Size, MACs and speed × are the {b['reference']}'s figure "
        f"over the model's (speed: median of same-round time ratios at batch {b['batch_sizes'][0]}); a MACs cut is "
        f"not a latency cut, so compare those two columns; Δ acc is against the {b['reference']}. ⚠ marks a noisy "
        "latency (IQR/median > 20%) or a busy machine.", "",
        "| model | " + " | ".join(f"p50 ms @ batch {x}" for x in b["batch_sizes"]) + " | images/s | ECE |",
        "| --- | " + " | ".join("---:" for _ in b["batch_sizes"]) + " | ---: | ---: |",
    ]
    for name, m in report["models"].items():
        cells = " | ".join(f"{m['latency_ms_by_batch'][str(x)]['p50']:.2f}" for x in b["batch_sizes"])
        lines.append(f"| {name} | {cells} | {m['throughput_ips']:.0f} | {m['ece']:.3f} |")
    lines += _int8_section(report.get("quantization")) + _runtime_sections(report) + _gpu_section(report)
    lines.append("")
    for w in report.get("warnings", []):
        lines.append(f"**Warning:** {w}")
    return "\n".join(lines) + "\n"


def _int8_section(q: dict | None) -> list[str]:
    if not q:
        return []
    lines = ["", f"int8 layouts measured against {q['source']} on the val split (fp32: {q['fp32']['p50_ms']:.2f} ms, "
             f"accuracy {q['fp32']['accuracy']:.4f}); chosen: **{q['chosen']}** ({q['reason']}).", "",
             "| candidate | p50 ms @ batch 1 | val accuracy | agreement with fp32 | MB | operators |",
             "| --- | ---: | ---: | ---: | ---: | --- |"]
    lines += [f"| {c['name']} | {c['p50_ms']:.2f} | {c['accuracy']:.4f} | {c['agreement_with_source']:.4f} | "
              f"{c['onnx_bytes'] / 1e6:.2f} | {', '.join(c.get('vendor_ops') or []) or 'standard ONNX'} |"
              for c in q["candidates"]]
    mixed = q.get("mixed")
    if mixed:
        lines += ["", f"No plain int8 layout met the accuracy budget, so the {mixed['k']} most sensitive layers "
                  f"(onnx/sensitivity.json) were kept in float: {mixed['name']} reached val accuracy "
                  f"{mixed['accuracy']:.4f} (search: " + ", ".join(f"k={t['k']}: {t['accuracy']:.4f}"
                                                                   for t in mixed["search"]) + ")."]
    pte = q.get("executorch")
    if pte:
        lines += ["", f"ExecuTorch {pte['runtime_version']} (XNNPACK, batch 1, this CPU) on the val split: "
                  + "; ".join(f"{n} .pte {c['p50_ms']:.2f} ms, accuracy {c['accuracy']:.4f}, {c['onnx_bytes'] / 1e6:.2f} MB"
                              for n, c in pte["candidates"].items())
                  + f"; int8 agrees with fp32 on {pte['int8_agreement_with_fp32']:.1%}. deploy/model.pte holds "
                  f"**{pte['chosen']}** ({pte['reason']})."]
    qat = q.get("qat")
    if qat:
        lines += ["", f"Quantization-aware training ({qat['epochs']} epochs at lr {qat['lr']:g}, loss {qat['loss']!r}, "
                  f"teacher signal: {qat['teacher_signal']}) gave {qat['name']} val accuracy {qat['accuracy']:.4f} (calibrated start "
                  f"{qat['calibrated_val_accuracy']:.4f}; kept: {qat['kept']})."]
    return lines


def _runtime_sections(report: dict) -> list[str]:
    lines = []
    for runtime, r in (report.get("runtimes") or {}).items():
        lines += ["", f"The same files in {runtime} {r['version']} on this CPU (batch-1 latency timed in-process):", "",
                  "| model | loads | accuracy | top-1 agreement with ONNX Runtime | p50 ms @ batch 1 |",
                  "| --- | --- | ---: | ---: | ---: |"]
        for name, m in r["models"].items():
            if m["loads"]:
                flag = " ⚠" if m["agreement_with_onnxruntime"] < 0.99 else ""
                lines.append(f"| {name} | yes | {m['accuracy']:.4f} | {m['agreement_with_onnxruntime']:.4f}{flag} | "
                             f"{m['latency_ms']['p50']:.2f} |")
            else:
                lines.append(f"| {name} | no: {m['error']} | – | – | – |")
    return lines


def _gpu_section(report: dict) -> list[str]:
    gpu = {n: m["gpu"] for n, m in report["models"].items() if "gpu" in m}
    if not gpu:
        return []
    first = next(iter(gpu.values()))
    lines = ["", f"PyTorch fp32 on {first['device']} (CUDA events):", "",
             "| model | " + " | ".join(f"p50 ms @ batch {x}" for x in first["latency_ms_by_batch"]) + " | images/s |",
             "| --- | " + " | ".join("---:" for _ in first["latency_ms_by_batch"]) + " | ---: |"]
    for name, g in gpu.items():
        cells = " | ".join(f"{s['p50']:.3f}" for s in g["latency_ms_by_batch"].values())
        lines.append(f"| {name} | {cells} | {g['throughput_ips']:.0f} |")
    return lines
