"""Stage `quantize`: int8 static quantization of the final fp32 student (the pruned one when
pruning is on), calibrated on real training images.

With quantize.format = "auto" every candidate layout is built, timed interleaved with its fp32
source at batch 1 on this CPU, and scored on val through ONNX Runtime; the fastest within
quantize.max_accuracy_drop becomes onnx/student_int8.onnx. With deploy.target = portable (the
default) only layouts made of standard ONNX operators can win (QDQ); QOperator layouts need ONNX
Runtime's com.microsoft operators and so load nowhere else: they are measured and listed, and
win only with deploy.target = onnxruntime (or when named in quantize.format). onnx/quantize.json lists every
candidate and why the winner won; when no int8 candidate beats fp32 it says so and names the
fp32 model as the deployable one (student_int8.onnx is then the best int8 candidate, for reference).
`dynamic` and `fp16` are measured and listed for the record but chosen only when named in
quantize.format: dynamic leaves a CNN's convolutions in fp32 and ORT's CPU has few fp16
kernels, so a win by them on the CPU is timing noise, not a smaller int8 model.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compress.benchmarks.measure import percentiles, predictions
from compress.benchmarks.suite import time_latency
from compress.core.config import Config
from compress.core.data import calibration_batch
from compress.core.errors import CompressError
from compress.core.models import build_model
from compress.core.roster import (
    INT8,
    PTE_INT8,
    QUANTIZE_INFO,
    SENSITIVITY,
    TEACHER,
    checkpoint_path,
    final_fp32_student,
    onnx_path,
    pte_path,
)
from compress.core.stage import Context, Stage
from compress.exports.onnx import layer_names
from compress.exports.operators import vendor_domains
from compress.exports.quantize import Measured, build_candidate, choose, preprocessed, quantize_int8
from compress.exports.runtimes import EXTRAS, READS_ONNX, load, require
from compress.exports.sensitivity import layer_sensitivity
from compress.exports.session import cpu_session
from compress.stages.pte import choose_pte
from compress.stages.qat import QAT_CANDIDATE, train_and_export_qat

REFERENCE_ONLY = ("dynamic", "fp16")


@dataclass
class Trial:
    """What every int8 candidate is built from and scored on."""

    source: Path  # the fp32 ONNX file
    prepped: Path  # ONNX Runtime's pre-processed graph of it (shape inference, BatchNorm folded)
    tmp: Path  # where candidates are written
    calibration: np.ndarray  # training images for activation ranges
    val: np.ndarray  # the selection split
    labels: np.ndarray
    threads: int

    def predict(self, path: Path) -> np.ndarray:
        return predictions(cpu_session(path, self.threads), self.val)

    def accuracy(self, predicted: np.ndarray) -> float:
        return float((predicted == self.labels).mean())
SENSITIVITY_IMAGES = 32  # calibration images the per-layer debugger runs on


class QuantizeStage(Stage):
    name = "quantize"

    def reads(self, cfg: Config) -> tuple[str, ...]:
        qat = ("train", "distill", "export.opset", "seed") if cfg.quantize.qat != "off" else ()  # QAT trains
        return ("data", "quantize", "bench", "prune.enabled", "deploy.target", *qat)

    def enabled(self, cfg: Config) -> bool:
        return cfg.quantize.enabled

    def inputs(self, cfg: Config) -> list[str]:
        qat = [checkpoint_path(TEACHER)] if cfg.quantize.qat != "off" else []
        weights = [checkpoint_path(final_fp32_student(cfg))] if qat or cfg.deploy.target == "executorch" else []
        return [onnx_path(final_fp32_student(cfg)), *weights, *qat]

    def outputs(self, cfg: Config) -> list[str]:
        pte = [pte_path(final_fp32_student(cfg)), PTE_INT8] if cfg.deploy.target == "executorch" else []
        return [onnx_path(INT8), QUANTIZE_INFO, SENSITIVITY, *pte]

    def run(self, ctx: Context, key: str) -> dict:
        cfg, q = ctx.cfg, ctx.cfg.quantize
        source_name = final_fp32_student(cfg)
        source = ctx.run.path(onnx_path(source_name))
        names = q.candidates if q.format == "auto" else [q.format]
        with tempfile.TemporaryDirectory(dir=ctx.run.path("onnx")) as tmp, preprocessed(source) as prepped:
            trial = Trial(source, prepped, Path(tmp), calibration_batch(ctx.data, cfg.data, q.calibration_samples,
                                                                        cfg.seed).numpy(),
                          ctx.data.val_inputs(cfg.data).numpy(), ctx.data.val.labels.numpy(), cfg.bench.threads)
            files = {n: trial.tmp / f"{n}.onnx" for n in names}
            for name, path in files.items():  # pre-processing once for every candidate
                build_candidate(source, path, trial.calibration, q, name, prepped)
            preds = {"fp32": trial.predict(source), **{n: trial.predict(p) for n, p in files.items()}}
            static = [n for n in names if n not in REFERENCE_ONLY]
            # the layout most likely to ship: best val accuracy, a standard-ONNX one on ties
            analysed = max(static, key=lambda n: (trial.accuracy(preds[n]), n.startswith("qdq"))) if static else None
            ranking = self._sensitivity(ctx, trial, analysed)
            mixed = None
            if ranking and not any(self._within(ctx, trial, preds, n) for n in static):  # plain PTQ misses the budget
                mixed = self._mixed(ctx, trial, analysed, ranking, trial.accuracy(preds["fp32"]))
                if mixed:
                    files[mixed["name"]], preds[mixed["name"]] = mixed.pop("path"), mixed.pop("predictions")
            qat = None
            ptq_met = mixed is not None or any(self._within(ctx, trial, preds, n) for n in static)
            if q.qat == "on" or (q.qat == "auto" and q.format == "auto" and not ptq_met):
                files[QAT_CANDIDATE] = trial.tmp / "qat.onnx"
                qat = train_and_export_qat(ctx, key, source_name, source, files[QAT_CANDIDATE])
                preds[QAT_CANDIDATE] = trial.predict(files[QAT_CANDIDATE])
                qat["accuracy"] = trial.accuracy(preds[QAT_CANDIDATE])
                ctx.log(f"QAT: val accuracy {qat['accuracy']:.4f} (fp32 {trial.accuracy(preds['fp32']):.4f})")
            fp32, candidates = self._measure(ctx, trial, {"fp32": source, **files}, preds)
            eligible = [c for c in candidates if q.format == c.name or (
                c.name not in REFERENCE_ONLY and c.p50_ms != float("inf")
                and (not c.vendor_ops or cfg.deploy.target == "onnxruntime"))] or candidates
            winner, reason = choose(eligible, fp32, q.max_accuracy_drop if q.format == "auto" else 100.0)
            keep = winner if winner != "fp32" else max(eligible, key=lambda c: (c.accuracy, -c.p50_ms)).name
            with ctx.run.atomic(onnx_path(INT8)) as out:
                shutil.copyfile(files[keep], out)
            executorch = choose_pte(ctx, source_name, trial.calibration, trial.val, trial.labels) \
                if cfg.deploy.target == "executorch" else None
        chosen_ops = next((c.vendor_ops for c in candidates if c.name == keep), [])
        info = {"source": source_name, "format": q.format, "chosen": winner, "int8_file_holds": keep,
                "deploy_target": cfg.deploy.target, "vendor_ops": chosen_ops, "mixed": mixed, "qat": qat, "executorch": executorch,
                "deployable": INT8 if winner != "fp32" else source_name, "reason": reason,
                "fp32": vars(fp32), "candidates": [dict(vars(c), agreement_with_source=float(
                    np.mean(preds[c.name] == preds["fp32"]))) for c in candidates]}
        ctx.run.write_json(QUANTIZE_INFO, info)
        ctx.run.write_json(SENSITIVITY, {"layout": analysed, "measure": "SQNR (dB) lost in each layer, "
                                         "onnxruntime.quantization.qdq_loss_debug on calibration images",
                                         "layers": ranking})
        agreement = float(np.mean(preds[keep] == preds["fp32"]))
        self._report(ctx, winner, keep, reason, source_name, chosen_ops, agreement)
        return {"chosen": winner, "deployable": info["deployable"], "agreement_with_source": agreement,
                "reason": reason}

    @staticmethod
    def _within(ctx: Context, trial: Trial, preds: dict, name: str) -> bool:
        drop = 100 * (trial.accuracy(preds["fp32"]) - trial.accuracy(preds[name]))
        return drop <= ctx.cfg.quantize.max_accuracy_drop

    def _measure(self, ctx: Context, trial: Trial, files: dict[str, Path], preds: dict) -> tuple[Measured, list]:
        """(fp32, candidates): p50 in the target runtime, val accuracy, bytes, operator domains."""
        times = self._times(ctx, files, trial.val)

        def measured(n: str, path: Path) -> Measured:
            p50 = percentiles(times[n])["p50"] if times[n] else float("inf")  # inf: does not load there
            return Measured(n, p50, trial.accuracy(preds[n]), path.stat().st_size, vendor_domains(path))
        return measured("fp32", files["fp32"]), [measured(n, p) for n, p in files.items() if n != "fp32"]

    @staticmethod
    def _report(ctx: Context, winner: str, keep: str, reason: str, source_name: str, chosen_ops: list,
                agreement: float) -> None:
        q, target = ctx.cfg.quantize, ctx.cfg.deploy.target
        ctx.log(f"int8: chose {winner} ({reason})")
        if chosen_ops and target != "onnxruntime":
            ctx.warn(f"quantize.format = {keep} needs {', '.join(chosen_ops)} operators: the int8 file loads only in "
                     "ONNX Runtime (deploy.target = portable asks for standard ONNX operators)")
        if winner == "fp32":
            ctx.warn(f"no int8 layout was faster than fp32 on this CPU within the accuracy budget; "
                     f"the deployable model is {source_name} ({reason})")
        if agreement < q.min_agreement:
            ctx.warn(f"int8 student ({keep}) agrees with its fp32 source on only {agreement:.1%} of val images "
                     f"(required {q.min_agreement:.0%})")

    def check(self, cfg: Config, data) -> None:
        if cfg.deploy.target in EXTRAS:
            require(cfg.deploy.target)
        if cfg.quantize.keep_float and data is None:  # names depend only on the architecture: checked up front
            student = build_model(cfg.distill.arch, 2, head_hidden=cfg.distill.head_hidden)
            valid = layer_names(student, cfg.data.crop, cfg.export.opset)
            unknown = [n for n in cfg.quantize.keep_float if n not in valid]
            if unknown:
                raise CompressError(f"quantize.keep_float: no layer named {unknown[0]!r} in {cfg.distill.arch}; valid "
                                    f"names ({len(valid)}, as onnx/sensitivity.json lists them): {', '.join(valid[:4])}, "
                                    f"..., {valid[-1]}")

    @staticmethod
    def _times(ctx: Context, files: dict[str, Path], val) -> dict[str, list[float]]:
        """Batch-1 timings of every candidate in the runtime the edge team will use: ONNX Runtime in
        fresh processes, or OpenVINO (deploy.target = openvino; a file it cannot load never wins)."""
        bench, target = ctx.cfg.bench, ctx.cfg.deploy.target
        if target not in READS_ONNX:  # ExecuTorch's choice is made on its own .pte files (stages.pte)
            return time_latency(files, val, [1], bench).samples[1]
        times = {}
        for name, path in files.items():
            try:
                times[name] = load(target, path, bench.threads).latency_ms(val, bench.warmup, bench.runs)
            except Exception:
                times[name] = [float("inf")]
        return times

    @staticmethod
    def _sensitivity(ctx: Context, trial: Trial, layout: str | None) -> list:
        """Per-layer ranking for `layout`, measured on its QDQ form (the debugger reads QDQ graphs)."""
        if layout is None:
            return []
        qdq = trial.tmp / "sensitivity-qdq.onnx"
        quantize_int8(trial.source, qdq, trial.calibration, ctx.cfg.quantize, "qdq_" + layout.split("_")[1],
                      trial.prepped)
        return layer_sensitivity(trial.prepped, qdq, trial.calibration[:SENSITIVITY_IMAGES])

    @staticmethod
    def _mixed(ctx: Context, trial: Trial, layout: str, ranking: list, fp32_accuracy: float) -> dict | None:
        """The `layout` with the k most sensitive layers in float, k the smallest (1, 2, 4, ...) that
        meets quantize.max_accuracy_drop on val; None when even all ranked layers do not."""
        q = ctx.cfg.quantize
        layers = list(dict.fromkeys(r["node"] for r in ranking))
        tried = []
        k = 1
        while True:
            k = min(k, len(layers))
            path = trial.tmp / f"mixed-{k}.onnx"
            quantize_int8(trial.source, path, trial.calibration, q, layout, trial.prepped, keep_float=layers[:k])
            preds = trial.predict(path)
            acc = trial.accuracy(preds)
            tried.append({"k": k, "accuracy": acc})
            if 100 * (fp32_accuracy - acc) <= q.max_accuracy_drop:
                return {"name": f"mixed_{layout}", "path": path, "predictions": preds, "accuracy": acc, "k": k,
                        "float_layers": layers[:k], "search": tried}
            if k == len(layers):
                ctx.warn(f"no mixed-precision {layout} met quantize.max_accuracy_drop = {q.max_accuracy_drop} "
                         f"(tried {tried})")
                return None
            k *= 2
