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
from pathlib import Path

import numpy as np

from compress.benchmarks.measure import percentiles, predictions
from compress.benchmarks.suite import time_latency
from compress.core.config import Config
from compress.core.data import calibration_batch
from compress.core.roster import INT8, QUANTIZE_INFO, SENSITIVITY, final_fp32_student, onnx_path
from compress.core.stage import Context, Stage
from compress.exports.quantize import Measured, build_candidate, choose, preprocessed, quantize_int8, vendor_domains
from compress.exports.runtimes import EXTRAS, load, require
from compress.exports.sensitivity import layer_sensitivity
from compress.exports.session import cpu_session

REFERENCE_ONLY = ("dynamic", "fp16")
SENSITIVITY_IMAGES = 32  # calibration images the per-layer debugger runs on


class QuantizeStage(Stage):
    name = "quantize"

    def reads(self, cfg: Config) -> tuple[str, ...]:
        return ("data", "quantize", "bench", "prune.enabled", "deploy.target")

    def enabled(self, cfg: Config) -> bool:
        return cfg.quantize.enabled

    def inputs(self, cfg: Config) -> list[str]:
        return [onnx_path(final_fp32_student(cfg))]

    def outputs(self, cfg: Config) -> list[str]:
        return [onnx_path(INT8), QUANTIZE_INFO, SENSITIVITY]

    def run(self, ctx: Context, key: str) -> dict:
        cfg, data, q = ctx.cfg, ctx.data, ctx.cfg.quantize
        source_name = final_fp32_student(cfg)
        source = ctx.run.path(onnx_path(source_name))
        calibration = calibration_batch(data, cfg.data, q.calibration_samples, cfg.seed).numpy()
        val = data.val_inputs(cfg.data).numpy()
        labels = data.val.labels.numpy()
        names = q.candidates if q.format == "auto" else [q.format]
        fp32_preds = predictions(cpu_session(source, cfg.bench.threads), val)
        fp32_accuracy = float((fp32_preds == labels).mean())
        with tempfile.TemporaryDirectory(dir=ctx.run.path("onnx")) as tmp, preprocessed(source) as prepped:
            files = {n: Path(tmp) / f"{n}.onnx" for n in names}
            for name, path in files.items():  # pre-processing once for every candidate
                build_candidate(source, path, calibration, q, name, prepped)
            preds = {"fp32": fp32_preds, **{n: predictions(cpu_session(p, cfg.bench.threads), val)
                                            for n, p in files.items()}}
            accuracy = {n: float((preds[n] == labels).mean()) for n in preds}
            static = [n for n in names if n not in REFERENCE_ONLY]
            # the layout most likely to ship: best val accuracy, a standard-ONNX one on ties
            analysed = max(static, key=lambda n: (accuracy[n], n.startswith("qdq"))) if static else None
            ranking = self._sensitivity(ctx, source, prepped, Path(tmp), calibration, analysed)
            mixed = None
            within = [n for n in static if 100 * (fp32_accuracy - accuracy[n]) <= q.max_accuracy_drop]
            if ranking and not within:  # plain PTQ misses the budget: keep the most sensitive layers in float
                mixed = self._mixed(ctx, source, prepped, Path(tmp), calibration, analysed, ranking, val, labels,
                                    fp32_accuracy)
                if mixed:
                    files[mixed["name"]], preds[mixed["name"]] = mixed.pop("path"), mixed.pop("predictions")
                    accuracy[mixed["name"]] = mixed["accuracy"]
            times = self._times(ctx, {"fp32": source, **files}, val)

            def measured(n: str, path: Path) -> Measured:
                p50 = percentiles(times[n])["p50"] if times[n] else float("inf")  # inf: does not load there
                return Measured(n, p50, accuracy[n], path.stat().st_size, vendor_domains(path))
            fp32 = measured("fp32", source)
            candidates = [measured(n, p) for n, p in files.items()]
            eligible = [c for c in candidates if q.format == c.name or (
                c.name not in REFERENCE_ONLY and c.p50_ms != float("inf")
                and (not c.vendor_ops or cfg.deploy.target == "onnxruntime"))]
            eligible = eligible or candidates
            winner, reason = choose(eligible, fp32, q.max_accuracy_drop if q.format == "auto" else 100.0)
            keep = winner if winner != "fp32" else max(eligible, key=lambda c: (c.accuracy, -c.p50_ms)).name
            with ctx.run.atomic(onnx_path(INT8)) as out:
                shutil.copyfile(files[keep], out)
        agreement = float(np.mean(preds[keep] == preds["fp32"]))
        chosen_ops = next((c.vendor_ops for c in candidates if c.name == keep), [])
        if chosen_ops and cfg.deploy.target != "onnxruntime":
            ctx.warn(f"quantize.format = {keep} needs {', '.join(chosen_ops)} operators: the int8 file loads only in "
                     "ONNX Runtime (deploy.target = portable asks for standard ONNX operators)")
        info = {"source": source_name, "format": q.format, "chosen": winner, "int8_file_holds": keep,
                "deploy_target": cfg.deploy.target, "vendor_ops": chosen_ops, "mixed": mixed,
                "deployable": INT8 if winner != "fp32" else source_name, "reason": reason,
                "fp32": vars(fp32), "candidates": [dict(vars(c), agreement_with_source=float(
                    np.mean(preds[c.name] == preds["fp32"]))) for c in candidates]}
        ctx.run.write_json(QUANTIZE_INFO, info)
        ctx.run.write_json(SENSITIVITY, {"layout": analysed, "measure": "SQNR (dB) lost in each layer, "
                                         "onnxruntime.quantization.qdq_loss_debug on calibration images",
                                         "layers": ranking})
        ctx.log(f"int8: chose {winner} ({reason})")
        if winner == "fp32":
            ctx.warn(f"no int8 layout was faster than fp32 on this CPU within the accuracy budget; "
                     f"the deployable model is {source_name} ({reason})")
        if agreement < q.min_agreement:
            ctx.warn(f"int8 student ({keep}) agrees with its fp32 source on only {agreement:.1%} of val images "
                     f"(required {q.min_agreement:.0%})")
        return {"chosen": winner, "deployable": info["deployable"], "agreement_with_source": agreement,
                "reason": reason}

    def check(self, cfg: Config, data) -> None:
        if cfg.deploy.target in EXTRAS:
            require(cfg.deploy.target)

    @staticmethod
    def _times(ctx: Context, files: dict[str, Path], val) -> dict[str, list[float]]:
        """Batch-1 timings of every candidate in the runtime the edge team will use: ONNX Runtime in
        fresh processes, or OpenVINO (deploy.target = openvino; a file it cannot load never wins)."""
        bench, target = ctx.cfg.bench, ctx.cfg.deploy.target
        if target not in EXTRAS:
            return time_latency(files, val, [1], bench).samples[1]
        times = {}
        for name, path in files.items():
            try:
                times[name] = load(target, path, bench.threads).latency_ms(val, bench.warmup, bench.runs)
            except Exception:
                times[name] = [float("inf")]
        return times

    @staticmethod
    def _sensitivity(ctx: Context, source: Path, prepped: Path, tmp: Path, calibration, layout: str | None) -> list:
        """Per-layer ranking for `layout`, measured on its QDQ form (the debugger reads QDQ graphs)."""
        if layout is None:
            return []
        qdq = tmp / "sensitivity-qdq.onnx"
        quantize_int8(source, qdq, calibration, ctx.cfg.quantize, "qdq_" + layout.split("_")[1], prepped)
        return layer_sensitivity(prepped, qdq, calibration[:SENSITIVITY_IMAGES])

    @staticmethod
    def _mixed(ctx: Context, source: Path, prepped: Path, tmp: Path, calibration, layout: str, ranking: list,
               val, labels, fp32_accuracy: float) -> dict | None:
        """The `layout` with the k most sensitive layers in float, k the smallest (1, 2, 4, ...) that
        meets quantize.max_accuracy_drop on val; None when even all ranked layers do not."""
        q, threads = ctx.cfg.quantize, ctx.cfg.bench.threads
        layers = list(dict.fromkeys(r["node"] for r in ranking))
        tried = []
        k = 1
        while True:
            k = min(k, len(layers))
            path = tmp / f"mixed-{k}.onnx"
            quantize_int8(source, path, calibration, q, layout, prepped, keep_float=layers[:k])
            preds = predictions(cpu_session(path, threads), val)
            acc = float((preds == labels).mean())
            tried.append({"k": k, "accuracy": acc})
            if 100 * (fp32_accuracy - acc) <= q.max_accuracy_drop:
                return {"name": f"mixed_{layout}", "path": path, "predictions": preds, "accuracy": acc, "k": k,
                        "float_layers": layers[:k], "search": tried}
            if k == len(layers):
                ctx.warn(f"no mixed-precision {layout} met quantize.max_accuracy_drop = {q.max_accuracy_drop} "
                         f"(tried {tried})")
                return None
            k *= 2
