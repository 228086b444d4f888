"""Stage `report`: plots (PNG) and one self-contained report.html with them embedded, including
Grad-CAM maps of the teacher and the deployable student and their mean overlap on val."""
from __future__ import annotations

import base64
import html

import torch

from compress.benchmarks import plots
from compress.benchmarks.gradcam import gradcam, top_region_iou
from compress.benchmarks.report import markdown_table
from compress.core.config import Config
from compress.core.models import load_model
from compress.core.roster import (
    QUANTIZE_INFO,
    REPORT_HTML,
    REPORT_JSON,
    TEACHER,
    checkpoint_path,
    deployable,
    final_fp32_student,
    plot_path,
)
from compress.core.stage import Context, Stage

GRADCAM_PANELS = 6  # val images shown side by side
GRADCAM_MAX_IMAGES = 256  # val images averaged for the overlap figure (bounded for big val sets)
PLOTS = ("accuracy_vs_latency", "size", "training", "confusion", "gradcam")


class ReportStage(Stage):
    name = "report"

    def reads(self, cfg: Config) -> tuple[str, ...]:
        return ("data", "prune.enabled", "quantize.enabled")  # the last two: which model is deployable

    def inputs(self, cfg: Config) -> list[str]:
        return ([REPORT_JSON, checkpoint_path(TEACHER), checkpoint_path(final_fp32_student(cfg))]
                + ([QUANTIZE_INFO] if cfg.quantize.enabled else []))

    def outputs(self, cfg: Config) -> list[str]:
        return [REPORT_HTML] + [plot_path(p) for p in PLOTS]

    def run(self, ctx: Context, key: str) -> dict:
        cfg, data = ctx.cfg, ctx.data
        report = ctx.run.read_json(REPORT_JSON)
        chosen, source = deployable(cfg, ctx.run), final_fp32_student(cfg)
        crops = data.val_crops(cfg.data.crop)[:GRADCAM_MAX_IMAGES]
        images = data.val_inputs(cfg.data)[:GRADCAM_MAX_IMAGES]
        teacher, _ = load_model(ctx.run.path(checkpoint_path(TEACHER)))
        student, _ = load_model(ctx.run.path(checkpoint_path(source)))
        with torch.no_grad():
            target = teacher(images).argmax(1)  # both explain the teacher's class
        (t_cam, t_grid), (s_cam, s_grid) = gradcam(teacher, images, target), gradcam(student, images, target)
        spatial = min(t_grid + s_grid) > 1  # 1x1 feature maps say nothing about where a model looks
        overlap = top_region_iou(t_cam, s_cam) if spatial else torch.tensor([float("nan")])
        pngs = {
            "accuracy_vs_latency": plots.accuracy_vs_latency(report["models"], chosen),
            "size": plots.sizes(report["models"]),
            "training": plots.training_curves(report.get("training", {})),
            "confusion": plots.confusion(report["models"][chosen]["confusion_matrix"], data.classes,
                                         f"{chosen} on val"),
            "gradcam": plots.gradcam_panels(crops[:GRADCAM_PANELS].numpy(), t_cam[:GRADCAM_PANELS].numpy(),
                                            s_cam[:GRADCAM_PANELS].numpy(), source),
        }
        for name, png in pngs.items():
            with ctx.run.atomic(plot_path(name)) as tmp:
                tmp.write_bytes(png)
        summary = {"deployable": chosen, "gradcam_source": source, "gradcam_images": len(images),
                   "gradcam_feature_maps": {TEACHER: list(t_grid), source: list(s_grid)},
                   "gradcam_top20_iou_mean": float(overlap.mean()) if spatial else None,
                   "gradcam_top20_iou_std": float(overlap.std()) if spatial and len(overlap) > 1 else None}
        ctx.run.write_text(REPORT_HTML, render_html(report, pngs, summary))
        return summary


def _table_html(markdown: str) -> str:
    rows = [r.strip().strip("|").split("|") for r in markdown.strip().splitlines() if r.strip()]
    head, body = rows[0], rows[2:]
    out = ["<table><tr>" + "".join(f"<th>{html.escape(c.strip())}</th>" for c in head) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in r) + "</tr>" for r in body]
    return "\n".join(out) + "</table>"


def _overlap_sentence(summary: dict) -> str:
    grids = ", ".join(f"{n} {g[0]}×{g[1]}" for n, g in summary["gradcam_feature_maps"].items())
    if summary["gradcam_top20_iou_mean"] is None:
        return (f"Feature maps entering global pooling are {grids} at this input size: they carry no spatial "
                "information, so no overlap is computed. Use a larger data.crop to compare where the models look.")
    return (f"Mean IoU of the 20% most salient pixels, teacher vs {summary['gradcam_source']}, for the teacher's "
            f"predicted class, over {summary['gradcam_images']} val images: <b>{summary['gradcam_top20_iou_mean']:.3f}"
            f"</b> (± {summary['gradcam_top20_iou_std']:.3f}; feature maps {grids}).")


def render_html(report: dict, pngs: dict[str, bytes], summary: dict) -> str:
    def img(name: str, alt: str) -> str:
        data = base64.b64encode(pngs[name]).decode()
        return f'<figure><img alt="{alt}" src="data:image/png;base64,{data}"><figcaption>{alt} ' \
               f'(<a href="{plot_path(name)}">{plot_path(name)}</a>)</figcaption></figure>'
    d, env, b = report["dataset"], report["environment"], report["benchmark"]
    chosen = report["models"][summary["deployable"]]["vs_reference"]
    warnings = "".join(f"<p class=warn>Warning: {html.escape(w)}</p>" for w in report.get("warnings", []))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>compress report: {html.escape(d['name'])}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child{{text-align:left}}
figure{{display:inline-block;margin:1em}}img{{max-width:100%}}.warn{{color:#a40}}</style></head><body>
<h1>compress report: {html.escape(d['name'])}</h1>
<p><b>Deployable: {summary['deployable']}</b> — {chosen['size_x']:.1f}× smaller, {chosen['speed_x']:.2f}× faster,
{100 * chosen['accuracy_delta']:+.1f} accuracy points vs the teacher.</p>
<p>{len(d['classes'])} classes, {d['train_size']} train / {d['val_size']} val images. ONNX Runtime {env['onnxruntime']}
on {html.escape(str(env['cpu']))} ({', '.join(env['isa'])}), {b['threads']} threads, batch sizes {b['batch_sizes']},
{b['runs']} interleaved rounds.</p>{warnings}
{_table_html(markdown_table(report))}
<h2>Accuracy, latency and size</h2>{img('accuracy_vs_latency', 'accuracy vs latency')}{img('size', 'ONNX size per model')}
<h2>Training</h2>{img('training', 'training loss and val accuracy per epoch')}
<h2>Deployable model</h2>{img('confusion', 'confusion matrix of ' + summary['deployable'])}
<h2>Where teacher and student look (Grad-CAM)</h2>
<p>{_overlap_sentence(summary)}</p>{img('gradcam', 'Grad-CAM: image, teacher, student')}
</body></html>
"""
