"""Stage `benchmark`: every exported model measured through ONNX Runtime on the CPU in one
process (accuracy figures, interleaved latency at each batch size, ratios to the teacher);
writes report.json and report.md."""
from __future__ import annotations

import torch

from compress.core.budget import degenerate_warning
from compress.core.config import Config, get_key
from compress.core.data import Dataset
from compress.core.documents import DatasetInfo, QuantizeDecision, Report
from compress.core.models import load_model
from compress.core.roster import (
    EXPORT_INFO,
    QUANTIZE_INFO,
    REPORT_JSON,
    REPORT_MD,
    TEACHER,
    all_models,
    checkpoint_path,
    comparisons,
    fp32_models,
    onnx_path,
    torch_models,
)
from compress.core.stage import Context, Stage
from compress.core.weights import WeightsSource
from compress.measure.latency import cuda_latency_ms
from compress.measure.runtimes import warnings as runtime_warnings
from compress.measure.suite import GATED_SETTINGS, benchmark_onnx
from compress.reporting.report import markdown_report


class BenchmarkStage(Stage):
    name = "benchmark"

    def reads(self, cfg: Config) -> tuple[str, ...]:
        return ("data", "bench", "distill.baseline", "prune.enabled", "quantize.enabled", *ORIGIN_KEYS, *GATED_SETTINGS)

    def inputs(self, cfg: Config) -> list[str]:
        return ([onnx_path(n) for n in all_models(cfg)] + [EXPORT_INFO]
                + [checkpoint_path(n) for n in torch_models(cfg)]
                + ([QUANTIZE_INFO] if cfg.quantize.enabled else []))

    def outputs(self, cfg: Config) -> list[str]:
        return [REPORT_JSON, REPORT_MD]

    def run(self, ctx: Context, key: str) -> dict:
        cfg, data = ctx.cfg, ctx.data
        split = data.report_split  # test when there is one: val chose epochs, int8 layout and prune rounds
        images = data.inputs(split, cfg.data).numpy()
        paths = {n: ctx.run.path(onnx_path(n)) for n in all_models(cfg)}
        measured = benchmark_onnx(paths, images, data.split(split).labels.numpy(), data.classes, cfg.bench,
                                  reference=TEACHER, root=ctx.run.root, pairs=comparisons(cfg))
        info = ctx.run.read_json(EXPORT_INFO)
        if torch.cuda.is_available():
            for name in torch_models(cfg):
                model, _ = load_model(ctx.run.path(checkpoint_path(name)))
                by_batch = {str(b): cuda_latency_ms(model, images, b, cfg.bench.warmup, cfg.bench.runs)
                            for b in sorted(set(cfg.bench.batch_sizes))}
                largest = max(by_batch, key=int)
                measured["models"][name]["gpu"] = {
                    "device": torch.cuda.get_device_name(0), "precision": "fp32", "latency_ms_by_batch": by_batch,
                    "throughput_ips": int(largest) * 1000.0 / by_batch[largest]["p50"]}
        quantization = QuantizeDecision.read(ctx.run.path(QUANTIZE_INFO)) if cfg.quantize.enabled else None
        if quantization and quantization.litert:  # the shipped .tflite, held against the ONNX file of its weights
            shipped = quantization.litert.candidates[quantization.litert.chosen]
            measured.setdefault("runtimes", {})["litert"] = {"version": quantization.litert.runtime_version, "models": {
                quantization.source: {"loads": True, "accuracy": shipped.report_accuracy,
                                      "agreement_with_onnxruntime": shipped.agreement_with_onnx}}}
        for name, m in measured["models"].items():
            if m.get("predicts_one_class") is not None:
                ctx.warn(degenerate_warning(name, m["predicts_one_class"], split, m["accuracy"]))
        dataset = dataset_info(data)
        report = Report.from_dict({
            **measured,
            "dataset": dataset,
            "settings": {k: get_key(cfg, k) for k in GATED_SETTINGS},
            "training": {n: info[n]["history"] for n in fp32_models(cfg)},
            "recipes": {n: info[n]["recipe"] for n in fp32_models(cfg) if info[n].get("recipe")},
            "origins": origins(cfg),
            "quantization": quantization,
            "warnings": ctx.earlier_warnings + ctx.warnings + dataset.copy_warnings()
            + runtime_warnings(measured.get("runtimes", {})),
        }, "the benchmark")
        ctx.run.write_json(REPORT_JSON, report.to_dict())
        ctx.run.write_text(REPORT_MD, markdown_report(report))
        return {n: {"accuracy": m.accuracy, "p50_ms": m.latency_ms.p50} for n, m in report.models.items()}


ORIGIN_KEYS = ("teacher.onnx", "teacher.checkpoint", "teacher.weights", "distill.weights")  # where models started


def origins(cfg: Config, student: str | None = None) -> dict[str, str]:
    """Where the teacher and the student (`student`: one of a search's, default distill.arch)
    started, in words (report and model card)."""
    t, d = cfg.teacher, cfg.distill
    if t.onnx:
        teacher = f"given as the ONNX file {t.onnx} (not trained here; logits from ONNX Runtime)"
    elif t.checkpoint:
        teacher = f"given as the checkpoint {t.checkpoint} (not trained here)"
    else:
        teacher = f"{t.arch}, fine-tuned from {WeightsSource.parse(t.weights).describe()}"
    return {TEACHER: teacher, "student": f"{student or d.arch}, distilled from {WeightsSource.parse(d.weights).describe()}"}


def dataset_info(data: Dataset) -> DatasetInfo:
    """What the report says about the data: sizes, which split the figures come from, images per
    class per split, and copies across splits."""
    split = data.report_split
    return DatasetInfo(data.name, data.classes, len(data.train), len(data.val),
                       len(data.test) if data.test is not None else 0, split,
                       "val" + ("" if split == "test" else " (also the reported figures: too few images for a "
                                                          "separate test split)"),
                       class_counts=data.class_counts(), copies=data.copies)
