"""Stage `student_int8`: int8 static quantization of the final fp32 student (the pruned one when
pruning is on), calibrated on real training images, with top-1 agreement against its fp32
source on val checked through ONNX Runtime (below quantize.min_agreement is a loud warning)."""
from __future__ import annotations

import numpy as np

from exports.onnx import cpu_session, run_logits
from exports.quantize import quantize_int8
from pipeline.config import Config
from pipeline.data import calibration_batch, normalize
from pipeline.rundir import onnx_path
from pipeline.stage import Context, Stage


def int8_source(cfg: Config) -> str:
    return "student_pruned" if cfg.prune.enabled else "student"


class QuantizeStage(Stage):
    name = "student_int8"
    sections = ("data", "quantize")

    def enabled(self, cfg: Config) -> bool:
        return cfg.quantize.enabled

    def inputs(self, cfg: Config) -> list[str]:
        return [onnx_path(int8_source(cfg))]

    def outputs(self, cfg: Config) -> list[str]:
        return [onnx_path(self.name)]

    def run(self, ctx: Context, key: str) -> dict:
        cfg, data = ctx.cfg, ctx.data
        source = ctx.run.path(onnx_path(int8_source(cfg)))
        calibration = calibration_batch(data, cfg.data, cfg.quantize.calibration_samples, cfg.seed).numpy()
        val = normalize(data.val_crops(cfg.data.crop), cfg.data.mean, cfg.data.std).numpy()
        with ctx.run.atomic(onnx_path(self.name)) as tmp:
            quantize_int8(source, tmp, calibration, cfg.quantize)
            fp32 = run_logits(cpu_session(source), val).argmax(1)
            int8 = run_logits(cpu_session(tmp), val).argmax(1)
        agreement = float(np.mean(fp32 == int8))
        ctx.log(f"int8: top-1 agreement with {int8_source(cfg)} on val {agreement:.4f}")
        if agreement < cfg.quantize.min_agreement:
            ctx.warn(f"int8 student agrees with its fp32 source on only {agreement:.1%} of val images "
                     f"(required {cfg.quantize.min_agreement:.0%}); try quantize.format or more calibration samples")
        return {"source": int8_source(cfg), "agreement_with_source": agreement,
                "meets_min_agreement": agreement >= cfg.quantize.min_agreement}
