"""Quantization-aware training of the final fp32 student, for when post-training quantization
loses more than quantize.max_accuracy_drop: fine-tune with fake quantization
(compress.exports.fake_quant) with the student's own distillation objective, adapted to the
phase (methods.student.phase_loss), to compete with the post-training candidates.

Activation ranges are first calibrated (min/max) over the whole training set, which alone is
often what a post-training candidate calibrated on quantize.calibration_samples images lacks.
The fine-tuned weights are kept only when they do at least as well on val as that calibrated
start (val is the selection split; the test split judges the result): on small sets a few
epochs of fine-tuning move val accuracy by a few points either way.

Losses that compare intermediate features (hint, cosine, rkd) need forward hooks on named
layers, which a traced and BatchNorm-folded graph no longer calls; they fall back to the KL
term on logits (Hinton et al. 2015), said in the log and in onnx/quantize.json.
"""
from __future__ import annotations

import copy
import logging

import torch
from torch import nn

from compress.core.data import normalize
from compress.core.loader import train_batches
from compress.core.loop import evaluate
from compress.exports.fake_quant import calibrate_activations, fake_quant_model
from compress.methods.student import Distillation, train_student
from compress.methods.training import Trainer, TrainRun

log = logging.getLogger("compress")

QAT_NAME = "student_qat"  # progress and resume file name
QAT_CANDIDATE = "qat_qdq_u8s8"


def train_qat(trainer: Trainer, model: nn.Module, run: TrainRun, plan: Distillation | None,
              per_channel: bool) -> tuple[torch.fx.GraphModule, dict]:
    """`model` with fake quantization, ranges calibrated on the whole training set, fine-tuned by
    `run` with `plan` (CE when None); the calibrated start is kept when fine-tuning did worse on val.
    Returns the fake-quant model and what happened (history, calibrated accuracy, what was kept)."""
    data, dcfg = trainer.data, trainer.data_cfg
    example = normalize(data.val_crops(dcfg.crop)[:2], dcfg.mean, dcfg.std)
    qat_model = fake_quant_model(model, example, per_channel).to(trainer.device)
    calibrate_activations(qat_model, train_batches(data.train, dcfg, run.seed, 0, shuffle=False, augment="none"),
                          trainer.device)
    calibrated = copy.deepcopy(qat_model.state_dict())
    start_accuracy = evaluate(qat_model, data, dcfg, trainer.device)
    history = train_student(trainer, qat_model, run, plan)
    trained = bool(history) and history[-1]["val_accuracy"] >= start_accuracy
    if not trained:  # on val, fine-tuning did worse than the calibrated start: ship the start
        qat_model.load_state_dict(calibrated)
        log.info("QAT: fine-tuned val accuracy %.4f < calibrated %.4f; keeping the calibrated fake-quant weights",
                 history[-1]["val_accuracy"], start_accuracy)
    return qat_model, {"history": history, "calibrated_val_accuracy": start_accuracy,
                       "kept": "fine-tuned" if trained else "calibrated (fine-tuning lowered val accuracy)"}
