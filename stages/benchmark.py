"""Stage `benchmark`: params, MACs, ONNX bytes, accuracy and teacher agreement through ONNX
Runtime, and batch-1 latency p50/p90 at a fixed thread count, for every exported model;
writes report.json and report.md."""
from __future__ import annotations

import platform

import onnxruntime as ort

from benchmarks.measure import latency_ms, predictions
from benchmarks.report import add_ratios, markdown_report
from exports.onnx import cpu_session
from pipeline.config import Config
from pipeline.data import normalize
from pipeline.rundir import EXPORT_INFO, REPORT_JSON, REPORT_MD, onnx_path
from pipeline.stage import Context, Stage
from stages.export import fp32_model_names
from stages.quantize import int8_source


def benchmarked_models(cfg: Config) -> list[str]:
    return fp32_model_names(cfg) + (["student_int8"] if cfg.quantize.enabled else [])


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class BenchmarkStage(Stage):
    name = "benchmark"
    sections = ("data", "bench")

    def inputs(self, cfg: Config) -> list[str]:
        return [onnx_path(n) for n in benchmarked_models(cfg)] + [EXPORT_INFO]

    def outputs(self, cfg: Config) -> list[str]:
        return [REPORT_JSON, REPORT_MD]

    def run(self, ctx: Context, key: str) -> dict:
        cfg, data, b = ctx.cfg, ctx.data, ctx.cfg.bench
        info = ctx.run.read_json(EXPORT_INFO)
        val = normalize(data.val_crops(cfg.data.crop), cfg.data.mean, cfg.data.std).numpy()
        labels = data.val.labels.numpy()
        models, preds = {}, {}
        for name in benchmarked_models(cfg):
            rel = onnx_path(name)
            session = cpu_session(ctx.run.path(rel), threads=b.threads)
            preds[name] = predictions(session, val)
            size = info[int8_source(cfg) if name == "student_int8" else name]
            models[name] = {
                "onnx": rel, "onnx_bytes": ctx.run.path(rel).stat().st_size,
                "params": size["params"], "macs": size["macs"],
                "accuracy": float((preds[name] == labels).mean()),
                "agreement_with_teacher": float((preds[name] == preds["teacher"]).mean()),
                "latency_ms": latency_ms(session, val[:1], b.warmup, b.runs),
            }
            ctx.log(f"benchmark {name}: accuracy {models[name]['accuracy']:.4f}, "
                    f"p50 {models[name]['latency_ms']['p50']:.2f} ms")
        add_ratios(models)
        report = {
            "dataset": {"name": data.name, "classes": data.classes, "train_size": len(data.train),
                        "val_size": len(data.val)},
            "benchmark": {"device": "cpu", "cpu": cpu_name(), "threads": b.threads, "batch_size": 1,
                          "warmup": b.warmup, "runs": b.runs, "onnxruntime": ort.__version__,
                          "input": [1, 3, cfg.data.crop, cfg.data.crop]},
            "models": models,
            "warnings": [w for rec in ctx.run.load_manifest().get("stages", {}).values()
                         for w in rec.get("warnings", [])],
        }
        ctx.run.write_json(REPORT_JSON, report)
        ctx.run.write_text(REPORT_MD, markdown_report(report))
        return {n: {"accuracy": m["accuracy"], "p50_ms": m["latency_ms"]["p50"]} for n, m in models.items()}
