"""Stage `report`: plots (PNG) and one self-contained report.html with them embedded, including
Grad-CAM maps of the teacher and the deployable student and their mean overlap on val."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from compress.core.architectures import gradcam_map
from compress.core.config import Config
from compress.core.documents import QuantizeDecision, Report
from compress.core.loop import predict_logits
from compress.core.models import load_model
from compress.core.roster import (
    QUANTIZE_INFO,
    REPORT_HTML,
    REPORT_JSON,
    SENSITIVITY,
    TEACHER,
    checkpoint_path,
    deployable,
    final_fp32_student,
    plot_path,
    teacher_file,
)
from compress.core.stage import Context, Stage
from compress.methods.gradcam import BATCH, gradcam, top_region_iou
from compress.reporting import plots
from compress.reporting.report import figure_html, html_page, inline_html, report_blocks, to_html

GRADCAM_PANELS = 6  # val images shown side by side
GRADCAM_MAX_IMAGES = 256  # val images averaged for the overlap figure (bounded for big val sets)
PLOTS = ("accuracy_vs_latency", "size", "training", "confusion", "gradcam")
QUANTIZE_PLOTS = ("sensitivity",)
# each student's run keeps its own curves; plots/confusion.png too when a point was chosen
SEARCH_PLOTS = ("accuracy_vs_latency", "size", "pareto")


class ReportStage(Stage):
    name = "report"

    def reads(self, cfg: Config) -> tuple[str, ...]:
        # which models exist, which is deployable
        return ("data", "prune.enabled", "quantize.enabled", "teacher.onnx", "distill.archs")

    def inputs(self, cfg: Config) -> list[str]:
        if cfg.distill.archs:  # a search: everything it draws is in report.json
            return [REPORT_JSON]
        return ([REPORT_JSON, teacher_file(cfg), checkpoint_path(final_fp32_student(cfg))]
                + ([QUANTIZE_INFO, SENSITIVITY] if cfg.quantize.enabled else []))

    def outputs(self, cfg: Config) -> list[str]:
        if cfg.distill.archs:
            return [REPORT_HTML] + [plot_path(p) for p in SEARCH_PLOTS]
        return [REPORT_HTML] + [plot_path(p) for p in PLOTS + (QUANTIZE_PLOTS if cfg.quantize.enabled else ())]

    def run(self, ctx: Context, key: str) -> dict:
        cfg, data = ctx.cfg, ctx.data
        report = Report.read(ctx.run.path(REPORT_JSON))
        if cfg.distill.archs:
            return self._search(ctx, report)
        decision = QuantizeDecision.read(ctx.run.path(QUANTIZE_INFO)) if cfg.quantize.enabled else None
        chosen, source = deployable(cfg, decision), final_fp32_student(cfg)
        order = spread_over_classes(data.val.labels)[:GRADCAM_MAX_IMAGES]  # panels show several classes
        crops = data.val_crops(cfg.data.crop)[order]
        cams = self._gradcam(ctx, source, data.val_inputs(cfg.data)[order])
        pngs = {
            "accuracy_vs_latency": plots.accuracy_vs_latency(report.models, chosen),
            "size": plots.sizes(report.models),
            "training": plots.training_curves(report.training or {}),
            "confusion": plots.confusion(report.models[chosen].confusion_matrix, data.classes,
                                         f"{chosen} on {report.figures_from}"),
            "gradcam": plots.gradcam_panels(crops[:GRADCAM_PANELS].numpy(), *cams.panels(GRADCAM_PANELS),
                                            student_name=source, note=cams.note),
        }
        if cfg.quantize.enabled:
            ranking = ctx.run.read_json(SENSITIVITY)
            pngs["sensitivity"] = plots.sensitivity(ranking["layers"], ranking["layout"])
        for name, png in pngs.items():
            with ctx.run.atomic(plot_path(name)) as tmp:
                tmp.write_bytes(png)
        summary = {"deployable": chosen, "gradcam_source": source, **cams.summary()}
        ctx.run.write_text(REPORT_HTML, render_html(report, pngs, summary))
        return summary


    @staticmethod
    def _search(ctx: Context, report: Report) -> dict:
        """A search's page: its front, the figures of every point, and the chosen point's confusion."""
        pareto = report.pareto
        assert pareto is not None
        chosen = pareto.chosen
        pngs = {"accuracy_vs_latency": plots.accuracy_vs_latency(report.models, chosen),
                "size": plots.sizes(report.models),
                "pareto": plots.pareto(pareto, report.dataset.val_size if report.dataset else 0)}
        if chosen:
            pngs["confusion"] = plots.confusion(report.models[chosen].confusion_matrix, ctx.data.classes,
                                                f"{chosen} on {report.figures_from}")
        for name, png in pngs.items():
            with ctx.run.atomic(plot_path(name)) as tmp:
                tmp.write_bytes(png)
        if not chosen:
            ctx.run.path(plot_path("confusion")).unlink(missing_ok=True)

        def img(name: str, alt: str) -> str:
            return figure_html(pngs[name], alt, plot_path(name)) if name in pngs else ""
        head = (f"<p><b>Deployable: {inline_html(report.headline(chosen))}</b>.</p>" if chosen else
                f"<p><b>Nothing was deployed</b>: {inline_html(pareto.refused or '')}</p>")
        ctx.run.write_text(REPORT_HTML, html_page("compress search", f"""{head}
{to_html(report_blocks(report))}
<h2>Every point</h2>{img('pareto', 'val accuracy against p50')}
<h2>Accuracy, latency and size</h2>{img('accuracy_vs_latency', 'accuracy vs latency')}{img('size', 'ONNX size per model')}
{('<h2>Deployable model</h2>' + img('confusion', 'confusion matrix of ' + chosen)) if chosen else ''}
<p>Training curves, Grad-CAM and int8 sensitivity of each student are in its own run directory, students/&lt;student&gt;/.</p>"""))
        return {"deployable": chosen, "refused": pareto.refused}

    @staticmethod
    def _gradcam(ctx: Context, source: str, images: torch.Tensor) -> CamComparison:
        """Grad-CAM of teacher and student for the teacher's class, or why it does not apply."""
        teacher_file = ctx.run.path(checkpoint_path(TEACHER))
        if not teacher_file.is_file():
            return CamComparison(note="the teacher is an ONNX file: Grad-CAM needs its PyTorch gradients")
        teacher, _ = load_model(teacher_file)
        student, _ = load_model(ctx.run.path(checkpoint_path(source)))
        layers = {TEACHER: gradcam_map(teacher), source: gradcam_map(student)}
        missing = [n for n, layer in layers.items() if layer is None]
        if missing:
            return CamComparison(note=f"{', '.join(missing)} has no spatial feature map before pooling "
                                      "(a transformer's tokens): Grad-CAM does not apply")
        target = predict_logits(teacher, [(images[i:i + BATCH], None) for i in range(0, len(images), BATCH)],
                                torch.device("cpu")).argmax(1)  # both explain the teacher's class
        (t_cam, t_grid), (s_cam, s_grid) = (gradcam(teacher, images, target, layers[TEACHER]),
                                            gradcam(student, images, target, layers[source]))
        return CamComparison(t_cam, s_cam, {TEACHER: t_grid, source: s_grid}, layers)


@dataclass
class CamComparison:
    """Teacher and student CAMs on the same images, or the note saying why there are none."""

    teacher: torch.Tensor | None = None
    student: torch.Tensor | None = None
    grids: dict[str, tuple[int, int]] = field(default_factory=dict)
    layers: dict[str, str | None] = field(default_factory=dict)
    note: str | None = None

    def __post_init__(self):
        if self.note is None and self.grids and min(min(g) for g in self.grids.values()) <= 1:
            self.note = "feature maps are 1×1 at this input size: Grad-CAM has no location to show"

    def panels(self, n: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        if self.teacher is None or self.student is None:
            return None, None
        return self.teacher[:n].numpy(), self.student[:n].numpy()

    def summary(self) -> dict:
        spatial = self.note is None and self.teacher is not None and self.student is not None
        overlap = top_region_iou(self.teacher, self.student) if spatial else None  # type: ignore[arg-type]
        return {"gradcam_images": 0 if self.teacher is None else len(self.teacher),
                "gradcam_layers": self.layers, "gradcam_feature_maps": {n: list(g) for n, g in self.grids.items()},
                "gradcam_note": self.note,
                "gradcam_top20_iou_mean": float(overlap.mean()) if overlap is not None else None,
                "gradcam_top20_iou_std": float(overlap.std()) if overlap is not None and len(overlap) > 1 else None}


def spread_over_classes(labels: torch.Tensor) -> torch.Tensor:
    """Indices of `labels` taken round-robin over the classes (first image of each class, then the
    second, ...), so the first few show several classes."""
    per_class = [torch.nonzero(labels == c).flatten().tolist() for c in torch.unique(labels).tolist()]
    order = [idx[i] for i in range(max(map(len, per_class), default=0)) for idx in per_class if i < len(idx)]
    return torch.tensor(order, dtype=torch.long)


def _overlap_sentence(summary: dict) -> str:
    grids = ", ".join(f"{n} {g[0]}×{g[1]}" for n, g in summary["gradcam_feature_maps"].items())
    if not summary["gradcam_feature_maps"]:
        return f"Grad-CAM skipped: {summary['gradcam_note']}."
    if summary["gradcam_top20_iou_mean"] is None:
        return (f"Feature maps entering global pooling are {grids} at this input size: they carry no spatial "
                "information, so no overlap is computed. Use a larger data.crop to compare where the models look.")
    return (f"Mean IoU of the 20% most salient pixels, teacher vs {summary['gradcam_source']}, for the teacher's "
            f"predicted class, over {summary['gradcam_images']} val images: <b>{summary['gradcam_top20_iou_mean']:.3f}"
            f"</b> (± {summary['gradcam_top20_iou_std']:.3f}; feature maps {grids}).")


def render_html(report: Report, pngs: dict[str, bytes], summary: dict) -> str:
    def img(name: str, alt: str) -> str:
        return figure_html(pngs[name], alt, plot_path(name))
    title = report.dataset.name if report.dataset else "benchmark"
    return html_page(f"compress report: {title}", f"""<p><b>Deployable: {inline_html(report.headline(summary['deployable']))}</b>.</p>
{to_html(report_blocks(report))}
<h2>Accuracy, latency and size</h2>{img('accuracy_vs_latency', 'accuracy vs latency')}{img('size', 'ONNX size per model')}
<h2>Training</h2>{img('training', 'training loss and val accuracy per epoch')}
<h2>Deployable model</h2>{img('confusion', 'confusion matrix of ' + summary['deployable'])}
{img('sensitivity', 'per-layer int8 sensitivity') if 'sensitivity' in pngs else ''}
<h2>Where teacher and student look (Grad-CAM)</h2>
<p>{_overlap_sentence(summary)}</p>{img('gradcam', 'Grad-CAM: image, teacher, student')}""")
