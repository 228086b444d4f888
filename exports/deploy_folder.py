"""The deploy/ folder an edge team receives, made from one ONNX file: model.onnx (batch fixed when
asked), model_with_preprocessing.onnx (uint8 pixels in, the documented preprocessing inside the
graph, its agreement with the recipe measured), labels.txt, and the OpenVINO IR when asked. The model card is written beside them
by the caller, which knows how the model was made."""
from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from compress.core.roster import (
    DEPLOY_LABELS,
    DEPLOY_ONNX,
    DEPLOY_OPENVINO,
    DEPLOY_WITH_PREPROCESSING,
)
from compress.core.rundir import atomic_path
from compress.exports.onnx import fix_batch, read_metadata
from compress.exports.runtimes import write_openvino_ir
from compress.exports.with_preprocessing import agreement, with_preprocessing

log = logging.getLogger("compress")


def package_onnx(source: Path, root: Path, pixels: list, fixed_batch: int | None, openvino: bool,
                 warn: Callable[[str], None]) -> dict:
    """What an edge team receives from one ONNX file, under `root`: deploy/model.onnx (the batch
    fixed when asked), model_with_preprocessing.onnx with its agreement measured on `pixels`,
    labels.txt, the OpenVINO IR. Returns the agreement."""
    deploy = root / DEPLOY_ONNX
    with atomic_path(deploy) as tmp:
        shutil.copyfile(source, tmp)
        if fixed_batch:
            fix_batch(tmp, fixed_batch)
    with atomic_path(root / DEPLOY_WITH_PREPROCESSING) as tmp:
        with_preprocessing(deploy, tmp)
    in_graph = agreement(deploy, root / DEPLOY_WITH_PREPROCESSING, pixels)
    log.info("package: model_with_preprocessing.onnx agrees with the documented recipe on %.1f%% of %d images "
             "(max |logit diff| %.3g)", 100 * in_graph["top1_agreement"], in_graph["images"],
             in_graph["max_abs_logit_diff"])
    if in_graph["top1_agreement"] < 0.99:
        warn(f"model_with_preprocessing.onnx agrees with the documented recipe on only "
             f"{in_graph['top1_agreement']:.1%} of {in_graph['images']} images")
    labels = json.loads(read_metadata(source)["labels"])
    with atomic_path(root / DEPLOY_LABELS) as tmp:
        tmp.write_text("\n".join(labels) + "\n")
    if openvino:
        with atomic_path(root / DEPLOY_OPENVINO[0]) as tmp_xml, atomic_path(root / DEPLOY_OPENVINO[1]) as tmp_bin:
            write_openvino_ir(deploy, tmp_xml)  # writes tmp_xml and the .bin beside it
            tmp_xml.with_suffix(".bin").replace(tmp_bin)
    return in_graph
