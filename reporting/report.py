"""The report's content (report.md, report.html and the terminal table) built once from the typed
report (compress.core.documents): every variant against the reference (the teacher), each
accuracy with its 95% interval, paired verdicts in words, the int8 decision, other runtimes,
and a warning when the timing ran on a busy machine.

The content is a list of blocks (headings, paragraphs, tables); `to_markdown` and `to_html`
render the same blocks, so the two files cannot say different things. Paragraph text may mark
**bold** and `code`, the only inline forms the report uses.
"""
from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass

from compress.core.documents import ModelReport, QuantizeDecision, Report
from compress.core.roster import BASELINE


@dataclass
class Heading:
    text: str
    level: int = 1


@dataclass
class Paragraph:
    lines: list[str]


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    right: int = 1  # columns from this index on are right-aligned (numbers)


Block = Heading | Paragraph | Table


def _num(value, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def _acc(m: ModelReport) -> str:
    ci = m.accuracy_interval
    return f"{m.accuracy:.4f} [{ci.low:.3f}, {ci.high:.3f}]" if ci else f"{m.accuracy:.4f}"


def models_table(report: Report) -> Table:
    """Every model against the reference: size, compute, accuracy (and balanced accuracy when the
    classes are lopsided), agreement, latency, ratios."""
    flag = " ⚠busy" if report.busy() else ""
    lopsided = report.dataset is not None and report.dataset.lopsided()
    rows = []
    for name, m in report.models.items():
        r = m.vs_reference
        noisy = " ⚠" if m.latency_ms.noisy or report.busy() else ""
        balanced = [_num(m.balanced_accuracy, ".4f")] if lopsided else []
        rows.append([name, _num(m.params and m.params / 1e6, ".2f"), _num(m.macs and m.macs / 1e6, ".1f"),
                     f"{m.onnx_bytes / 1e6:.2f}", _acc(m), *balanced, f"{m.agreement:.4f}",
                     f"{m.latency_ms.p50:.2f}{noisy}", f"{m.latency_ms.p90:.2f}", f"{r.size_x if r else 0:.1f}",
                     _num(r.macs_x if r else None, ".1f"), f"{r.speed_x if r else 0:.2f}{flag}",
                     f"{100 * (r.accuracy_delta if r else 0):+.1f}"])
    return Table(["model", "params (M)", "MACs (M)", "ONNX MB", "accuracy [95% CI]",
                  *(["balanced accuracy"] if lopsided else []), f"agree w/ {report.reference}",
                  "p50 ms", "p90 ms", "size ×", "MACs ×", "speed ×", "Δ acc (pts)"], rows)


def class_counts_blocks(report: Report) -> list[Block]:
    """Images per class in each split, and what lopsided classes or copies across splits mean."""
    d = report.dataset
    if d is None or not d.class_counts:
        return []
    splits = list(d.class_counts)
    blocks: list[Block] = [Table(["class", *splits], [[c, *[str(d.class_counts[s].get(c, 0)) for s in splits]]
                                                     for c in d.classes])]
    notes = []
    if d.lopsided():
        train = d.class_counts["train"]
        notes.append(f"The classes are lopsided ({max(train.values())} vs {min(train.values())} training images): "
                     "balanced accuracy (the mean of per-class recalls) is shown beside top-1; "
                     "`bench.metric = balanced` makes the int8 and deployable choices use it.")
    notes += [f"**{w}.**" for w in d.copy_warnings()]
    return blocks + ([Paragraph(notes)] if notes else [])


def headline(report: Report) -> list[str]:
    """Plain-words findings: did distillation beat the CE baseline, what did each step cost."""
    lines = []
    for c in report.comparisons:
        if c.against == BASELINE:
            words = {"better": "Distillation **beat** the CE-only baseline",
                     "worse": "Distillation did **worse** than the CE-only baseline",
                     "not distinguishable": "Distillation **did not measurably beat** the CE-only baseline"}
            lines.append(f"{words[c.verdict]}: {c.sentence()}.")
    return lines + [f"{c.sentence()}." for c in report.comparisons if c.against != BASELINE]


def figures_note(report: Report) -> str:
    d = report.dataset
    if d is not None and d.figures_from == "test":
        return (f"Accuracy: top-1 on the **test split** ({d.test_size} images) through ONNX Runtime; the val "
                f"split ({d.val_size} images) made every choice (epochs, int8 layout, prune rounds), the "
                "test split none.")
    return (f"Accuracy: top-1 on the **val split** ({d.val_size if d else '?'} images) through ONNX Runtime. The data "
            "has too few images per class for a separate test split, so these figures were **also used for "
            "selection** (int8 layout, prune rounds) and are optimistic.")


def contention_note(report: Report) -> str | None:
    c = report.busy()
    if not c:
        return None
    return ("⚠ **Timed on a busy machine**: " + "; ".join(c.reasons) + ". Speed-ups measured under load "
            "favour small models; re-measure on a quiet machine with `compress bench` before quoting them.")


def report_blocks(report: Report) -> list[Block]:
    b, env = report.benchmark, report.environment
    blocks: list[Block] = [Heading("compress report"), *pareto_blocks(report)]
    if report.dataset is not None:
        blocks += [Paragraph([report.dataset.describe()]), Paragraph([figures_note(report)])]
        blocks += class_counts_blocks(report)
    if report.origins:
        blocks.append(Paragraph([f"Models: {name} {words}." for name, words in report.origins.items()]))
    if report.recipes:
        blocks.append(Paragraph([f"Trained: {name}: {words}." for name, words in report.recipes.items()]))
    blocks.append(Paragraph(headline(report)))
    note = contention_note(report)
    if note:
        blocks.append(Paragraph([note]))
    blocks += [
        Paragraph([f"Latency: ONNX Runtime {env.onnxruntime} on {env.cpu} ({', '.join(env.isa) or 'no SIMD flags read'}), "
                   f"{b.threads} threads, batch sizes {b.batch_sizes}, {b.warmup} warm-up + {b.runs} timed "
                   "rounds, models interleaved."]),
        models_table(report),
        Paragraph([f"Accuracy is followed by its 95% Wilson interval. Size, MACs and speed × are the {b.reference}'s "
                   f"figure over the model's (speed: median of same-round time ratios at batch {b.batch_sizes[0]}); a "
                   "MACs cut is not a latency cut, so compare those two columns; Δ acc is against the "
                   f"{b.reference}. ⚠ marks a noisy latency (IQR/median > 20%) or a busy machine."]),
        Table(["model", *[f"p50 ms @ batch {x}" for x in b.batch_sizes], "images/s", "ECE"],
              [[name, *[f"{m.latency_ms_by_batch[str(x)].p50:.2f}" for x in b.batch_sizes], f"{m.throughput_ips:.0f}",
                f"{m.ece:.3f}"] for name, m in report.models.items()]),
    ]
    blocks += _int8_blocks(report.quantization) + _runtime_blocks(report) + _gpu_blocks(report)
    if report.warnings:
        blocks.append(Paragraph([f"**Warning:** {w}" for w in report.warnings]))
    return [blk for blk in blocks if not (isinstance(blk, Paragraph) and not blk.lines)]


def pareto_blocks(report: Report) -> list[Block]:
    """A search's front: every point, the rule and what it chose (or why nothing was deployed)."""
    p = report.pareto
    if not p:
        return []
    rows = []
    for point in sorted(p.points, key=lambda q: q.p50_ms):
        m = report.models[point.name]
        mark = " ★" if point.name == p.chosen else (" (runner-up)" if point.name == p.runner_up else "")
        if point.predicts_one_class is not None:
            mark += f" ⚠ degenerate: always {point.predicts_one_class!r}, never chosen"
        rows.append([point.name + mark, point.student, str(point.steps), "yes" if point.on_front else "",
                     f"{point.accuracy:.4f}", f"{m.accuracy:.4f}", f"{point.p50_ms:.2f}", f"{point.megabytes:.2f}"])
    rule = (f"Chosen by `deploy.objective = {p.objective}`: {p.rule}; on {p.runtime}, ties by size, then "
            f"by fewer steps from the student. Chosen: **{p.chosen}**" + (f"; runner-up: {p.runner_up}." if p.runner_up
                                                                         else ".")
            if p.chosen else f"**Nothing was deployed**: {p.refused}")
    return [Heading("Pareto front: every point a search measured", 2), Paragraph([rule]),
            Table(["point", "student", "steps", "front", "val accuracy", f"{report.figures_from} accuracy",
                   f"p50 ms ({p.runtime}, batch 1)", "MB"], rows)]


def _int8_blocks(q: QuantizeDecision | None) -> list[Block]:
    if not q:
        return []
    blocks: list[Block] = [
        Paragraph([f"int8 layouts measured against {q.source} on the val split (fp32: {q.fp32.p50_ms:.2f} ms, "
                   f"accuracy {q.fp32.accuracy:.4f}); chosen: **{q.chosen}** ({q.reason})."]),
        Table(["candidate", "p50 ms @ batch 1", "val accuracy", "agreement with fp32", "MB", "operators"],
              [[c.name, f"{c.p50_ms:.2f}", f"{c.accuracy:.4f}", f"{c.agreement_with_source or 0:.4f}",
                f"{c.onnx_bytes / 1e6:.2f}", ", ".join(c.vendor_ops) or "standard ONNX"] for c in q.candidates])]
    mixed, pte, qat = q.mixed, q.executorch, q.qat
    if mixed:
        blocks.append(Paragraph([
            f"No plain int8 layout met the accuracy budget, so the {mixed.k} most sensitive layers "
            f"(onnx/sensitivity.json) were kept in float: {mixed.name} reached val accuracy "
            f"{mixed.accuracy:.4f} (search: " + ", ".join(f"k={t.k}: {t.accuracy:.4f}" for t in mixed.search)
            + ")."]))
    if pte:
        blocks.append(Paragraph([
            f"ExecuTorch {pte.runtime_version} (XNNPACK, batch 1, this CPU) on the val split: "
            + "; ".join(f"{n} .pte {c.p50_ms:.2f} ms, accuracy {c.accuracy:.4f}, {c.onnx_bytes / 1e6:.2f} MB"
                        for n, c in pte.candidates.items())
            + f"; int8 agrees with fp32 on {pte.int8_agreement_with_fp32:.1%}. deploy/model.pte holds "
            f"**{pte.chosen}** ({pte.reason})."]))
    if qat:
        blocks.append(Paragraph([
            f"Quantization-aware training ({qat.epochs} epochs at lr {qat.lr:g}, loss {qat.loss!r}, "
            f"teacher signal: {qat.teacher_signal}) gave {qat.name} val accuracy {qat.accuracy:.4f} "
            f"(calibrated start {qat.calibrated_val_accuracy:.4f}; kept: {qat.kept})."]))
    return blocks


def _runtime_blocks(report: Report) -> list[Block]:
    blocks: list[Block] = []
    for runtime, r in report.runtimes.items():
        rows = []
        for name, m in r.models.items():
            if m.loads and m.agreement_with_onnxruntime is not None and m.latency_ms is not None:
                flag = " ⚠" if m.agreement_with_onnxruntime < 0.99 else ""
                rows.append([name, "yes", f"{m.accuracy:.4f}", f"{m.agreement_with_onnxruntime:.4f}{flag}",
                             f"{m.latency_ms.p50:.2f}"])
            else:
                rows.append([name, f"no: {m.error}", "–", "–", "–"])
        blocks += [Paragraph([f"The same files in {runtime} {r.version} on this CPU (batch-1 latency timed in-process):"]),
                   Table(["model", "loads", "accuracy", "top-1 agreement with ONNX Runtime", "p50 ms @ batch 1"], rows,
                         right=2)]
    return blocks


def _gpu_blocks(report: Report) -> list[Block]:
    gpu = {n: m.gpu for n, m in report.models.items() if m.gpu is not None}
    if not gpu:
        return []
    first = next(iter(gpu.values()))
    return [Paragraph([f"PyTorch fp32 on {first.device} (CUDA events):"]),
            Table(["model", *[f"p50 ms @ batch {x}" for x in first.latency_ms_by_batch], "images/s"],
                  [[name, *[f"{s.p50:.3f}" for s in g.latency_ms_by_batch.values()], f"{g.throughput_ips:.0f}"]
                   for name, g in gpu.items()])]


# ---------------------------------------------------------------- rendering

def _markdown_table(t: Table) -> str:
    align = ["---" if i < t.right else "---:" for i in range(len(t.header))]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in [t.header, align, *t.rows])


def to_markdown(blocks: list[Block]) -> str:
    out = []
    for blk in blocks:
        if isinstance(blk, Heading):
            out.append("#" * blk.level + " " + blk.text)
        elif isinstance(blk, Paragraph):
            out.append("\n".join(blk.lines))
        else:
            out.append(_markdown_table(blk))
    return "\n\n".join(out) + "\n"


def inline_html(text: str) -> str:
    """A paragraph line as HTML: escaped, with **bold** and `code` (the report's inline forms)."""
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def to_html(blocks: list[Block], heading_offset: int = 1) -> str:
    out = []
    for blk in blocks:
        if isinstance(blk, Heading):
            level = blk.level + heading_offset
            out.append(f"<h{level}>{html.escape(blk.text)}</h{level}>")
        elif isinstance(blk, Paragraph):
            out.append("<p>" + "<br>".join(inline_html(line) for line in blk.lines) + "</p>")
        else:
            out.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in blk.header) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{inline_html(c)}</td>" for c in row) + "</tr>"
                                 for row in blk.rows) + "</table>")
    return "\n".join(out)


PAGE_STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child{text-align:left}
figure{display:inline-block;margin:1em}img{max-width:100%}.warn{color:#a40}"""


def html_page(title: str, body: str) -> str:
    """One self-contained report.html page (a run's or a search's) around `body`."""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{PAGE_STYLE}</style></head><body>
{body}
</body></html>
"""


def figure_html(png: bytes, alt: str, href: str) -> str:
    """A plot embedded in the page (so the file travels alone), captioned with where its PNG is."""
    data = base64.b64encode(png).decode()
    return (f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"><figcaption>'
            f'{html.escape(alt)} (<a href="{href}">{href}</a>)</figcaption></figure>')


def markdown_report(report: Report) -> str:
    return to_markdown(report_blocks(report))


def markdown_table(report: Report) -> str:
    """The models table alone (the terminal and the README results section)."""
    return _markdown_table(models_table(report)) + "\n"
