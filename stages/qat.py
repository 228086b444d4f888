"""Quantization-aware training of the final fp32 student, for when post-training quantization
loses more than quantize.max_accuracy_drop: fine-tune with fake quantization
(compress.exports.fake_quant) for quantize.qat_epochs with the student's own distillation
objective, then export a QDQ u8s8 ONNX file that competes with the post-training candidates.

Activation ranges are first calibrated (min/max) over the whole training set, which alone is
often what a post-training candidate calibrated on quantize.calibration_samples images lacks.
The fine-tuned weights are kept only when they do at least as well on val as that calibrated
start (val is the selection split; the test split judges the result): on small sets a few
epochs of fine-tuning move val accuracy by a few points either way.

Losses that compare intermediate features (hint, attention, ...) need forward hooks on named
layers, which a traced and BatchNorm-folded graph no longer calls; they fall back to the KL
term on logits (Hinton et al. 2015), said in the log and in onnx/quantize.json.
"""
from __future__ import annotations

import copy
from pathlib import Path

from compress.core.data import normalize
from compress.core.loader import train_batches
from compress.core.models import load_model
from compress.core.roster import checkpoint_path, training_state_path
from compress.core.stage import Context
from compress.core.train import evaluate
from compress.exports.fake_quant import calibrate_activations, export_fake_quant, fake_quant_model
from compress.exports.onnx import read_metadata
from compress.stages.kd.logit import cross_entropy
from compress.stages.kd.spec import needs_teacher_features
from compress.stages.student_recipe import make_objective, student_seed
from compress.stages.training import TrainSpec, train

QAT_NAME = "student_qat"  # progress and resume file name
QAT_CANDIDATE = "qat_qdq_u8s8"


def qat_loss(spec: str) -> str:
    return "kl" if needs_teacher_features(spec) else spec


def train_and_export_qat(ctx: Context, key: str, source_name: str, source_onnx: Path, target: Path) -> dict:
    """Fine-tune `source_name`'s checkpoint with fake quantization, write it as QDQ ONNX to
    `target` with the source file's metadata; returns what was done (loss, history)."""
    cfg, q = ctx.cfg, ctx.cfg.quantize
    model, _ = load_model(ctx.run.path(checkpoint_path(source_name)))
    example = normalize(ctx.data.val_crops(cfg.data.crop)[:2], cfg.data.mean, cfg.data.std)
    qat_model = fake_quant_model(model, example, q.per_channel).to(ctx.device)
    seed = student_seed(cfg)
    calibrate_activations(qat_model, train_batches(ctx.data.train, cfg.data, seed, 0, shuffle=False, augment="none"),
                          ctx.device)
    calibrated = copy.deepcopy(qat_model.state_dict())
    start_accuracy = evaluate(qat_model, ctx.data, cfg.data, ctx.device)
    spec = TrainSpec(QAT_NAME, key, q.qat_epochs, q.qat_lr, seed, cfg.distill.augment)
    loss = qat_loss(cfg.distill.loss)
    if loss != cfg.distill.loss:
        ctx.log(f"QAT: distill.loss {cfg.distill.loss!r} compares features a folded graph does not expose; "
                f"fine-tuning with {loss!r} on logits")
    if cfg.distill.alpha < 1.0:
        objective, source = make_objective(ctx, qat_model, loss, seed)
        try:
            history = train(ctx, qat_model, objective, spec, objective=objective)
        finally:
            objective.close()
    else:
        smoothing = cfg.train.label_smoothing
        history = train(ctx, qat_model, lambda m, x, y, _index: cross_entropy(m(x), y, smoothing), spec)
        source = "none (CE only)"
    trained = bool(history) and history[-1]["val_accuracy"] >= start_accuracy
    if not trained:  # on val, fine-tuning did worse than the calibrated start: ship the start
        qat_model.load_state_dict(calibrated)
        ctx.log(f"QAT: fine-tuned val accuracy {history[-1]['val_accuracy']:.4f} < calibrated {start_accuracy:.4f}; "
                "keeping the calibrated fake-quant weights")
    metadata = {**read_metadata(source_onnx),
                "quantization": f"int8 QDQ u8s8 by quantization-aware training ({q.qat_epochs} epochs"
                                f"{', per-channel' if q.per_channel else ''})"}
    export_fake_quant(qat_model, target, cfg.data.crop, cfg.export.opset, metadata)
    ctx.run.path(training_state_path(QAT_NAME)).unlink(missing_ok=True)
    return {"name": QAT_CANDIDATE, "loss": loss, "teacher_signal": source, "epochs": q.qat_epochs, "lr": q.qat_lr,
            "history": history, "calibrated_val_accuracy": start_accuracy, "kept": "fine-tuned" if trained else
            "calibrated (fine-tuning lowered val accuracy)"}
