"""Does the CI gate tell real regressions from noise? Runs the gate as `compress check` does
(compress.gate: the baseline file, then A/B against a reference run) many times on this machine
and prints what it said. Prints figures; asserts nothing.

    python benchmarks/gate_honesty.py REFERENCE_RUN CANDIDATE_RUN --baseline benchmarks/baseline.json

REFERENCE_RUN and CANDIDATE_RUN are two CI-config runs of the same tree (`compress run --config
benchmarks/ci.toml`, twice, into two folders): the reference the gate times against, and the
unchanged candidate the injected regressions are made from.

1. False alarms: the unchanged candidate checked --unchanged times (each a fresh A/B session).
2. Slowdowns that leave MACs, params and the operator set unchanged: one to three extra Adds of a
   1e-7 constant after every ReLU, or after every residual block, inserted into the fp32 student
   and quantized again with the CI's own layout (the Add is a real, unfusable op in either form:
   ONNX Runtime folds an Add into a Conv only right after one, and removes only exact zeros).
   Predictions do not change. Each variant replaces the pruned student and the deployable int8 file.
3. Compute that grows ~20%: the residual-block variants closest to +20% MACs (copies of a stage's
   last block whose residual branch outputs zero, so predictions do not change), exported and quantized.

Each check prints the gate's verdict and the rows that decided it.
"""
from __future__ import annotations

import argparse
import copy
import itertools
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from compress.core.config import Config
from compress.core.data import calibration_batch, load_dataset
from compress.core.documents import Report
from compress.core.models import count_macs, count_params, load_model
from compress.exports.metadata import client_metadata, read_metadata
from compress.exports.onnx import export_onnx
from compress.exports.operators import operator_set
from compress.exports.quantize import quantize_int8
from compress.gate import baseline as baseline_file
from compress.gate.check import Limits, judge, time_both
from compress.gate.verdict import FAILING, Verdict

PRUNED, INT8 = "student_pruned", "student_int8"


# ---------------------------------------------------------------- MACs-neutral slowdowns

def with_extra_adds(model: onnx.ModelProto, after: str, count: int) -> onnx.ModelProto:
    """`count` Adds of a 1e-7 constant after every ReLU (`after` = "relu") or every residual block's
    output ReLU (`after` = "block"). The constant is not zero, so no optimizer removes the Add."""
    model = copy.deepcopy(model)
    graph = model.graph
    graph.initializer.append(numpy_helper.from_array(np.array(1e-7, np.float32), "injected_epsilon"))
    made_by = {out: node for node in graph.node for out in node.output}

    def chosen(node) -> bool:
        if node.op_type != "Relu":
            return False
        return after == "relu" or getattr(made_by.get(node.input[0]), "op_type", "") == "Add"

    nodes = []
    for node in graph.node:
        nodes.append(node)
        if not chosen(node):
            continue
        source = current = node.output[0]
        for k in range(count):
            nxt = f"{source}_injected{k}"
            nodes.append(helper.make_node("Add", [current, "injected_epsilon"], [nxt], name=f"injected_{source}_{k}"))
            current = nxt
        for other in graph.node:
            if other is not node:
                other.input[:] = [current if x == source else x for x in other.input]
        for output in graph.output:
            if output.name == source:
                output.name = current
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    return model


# ---------------------------------------------------------------- +20% compute

def extra_block(block: torch.nn.Module) -> torch.nn.Module:
    """A copy of a residual block whose residual branch outputs zero (last BatchNorm's scale and
    shift zeroed): the block then passes its (post-ReLU) input through unchanged, so the variant
    computes more and predicts exactly as before. Only compute moves, not accuracy."""
    extra = copy.deepcopy(block)
    last_bn = [m for m in extra.modules() if isinstance(m, torch.nn.BatchNorm2d)][-1]
    with torch.no_grad():
        last_bn.weight.zero_()
        last_bn.bias.zero_()
    return extra


def heavier_variants(checkpoint: Path, crop: int, target: float = 0.2, count: int = 5):
    """The `count` variants with one or two extra residual blocks (at most one per stage) whose MACs
    growth is closest to `target`: [(model, growth, what was added)]."""
    original, _ = load_model(checkpoint)
    base = count_macs(original, crop)
    stages = ("layer1", "layer2", "layer3", "layer4")
    found = []
    for chosen in [*[(s,) for s in stages], *itertools.combinations(stages, 2)]:
        model = copy.deepcopy(original)
        for stage in chosen:
            blocks = list(getattr(model, stage))
            setattr(model, stage, type(getattr(model, stage))(*blocks, extra_block(blocks[-1])))
        found.append((model.eval(), count_macs(model, crop) / base - 1, " + ".join(f"one {s} block" for s in chosen)))
    return sorted(found, key=lambda f: abs(f[1] - target))[:count]


def heavier_variant(checkpoint: Path, crop: int, target: float = 0.2):
    """The one variant closest to `target` (model, growth, description)."""
    return heavier_variants(checkpoint, crop, target, 1)[0]


# ---------------------------------------------------------------- a candidate run directory

def candidate_dir(unchanged: Path, into: Path, replaced: dict[str, Path]) -> Path:
    """A copy of the unchanged run's report and ONNX files with `replaced` models swapped in, and
    its report's figures for them rewritten as the benchmark stage would write them."""
    shutil.copytree(unchanged / "onnx", into / "onnx", ignore=shutil.ignore_patterns("*.pte"))
    report = json.loads((unchanged / "report.json").read_text())
    for name, path in replaced.items():
        target = into / "onnx" / f"{name}.onnx"
        shutil.copyfile(path, target)
        meta = read_metadata(target)
        model = report["models"][name]
        model.update(onnx_bytes=target.stat().st_size, operators=operator_set(target),
                     macs=int(meta["macs"]), params=int(meta["params"]))
    (into / "report.json").write_text(json.dumps(report))
    return into


def check(candidate: Path, reference: Path, baseline: baseline_file.Baseline) -> tuple[bool, str]:
    """One `compress check CANDIDATE --baseline ... --reference-run REFERENCE`: (failed, what decided)."""
    report, ref = Report.read(candidate / "report.json"), Report.read(reference / "report.json")
    outcome = judge(report, baseline, Limits(), reference=ref, timing=time_both(report, candidate, ref, reference))
    decisive = [r for r in outcome.rows if r.verdict in (*FAILING, Verdict.INCONCLUSIVE)]
    deployable = [r for r in outcome.rows if r.model == INT8 and r.label in ("latency@1", "latency@8")]
    shown = decisive or deployable
    return outcome.failed, "; ".join(f"{r.model} {r.label} {r.change} {r.verdict.value}" for r in shown)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reference", type=Path)
    ap.add_argument("candidate", type=Path, help="an unchanged run of the same tree")
    ap.add_argument("--baseline", type=Path, required=True)
    ap.add_argument("--unchanged", type=int, default=10)
    ap.add_argument("--heavier", type=int, default=5)
    args = ap.parse_args()
    cfg = Config.from_dict(json.loads((args.candidate / "manifest.json").read_text())["config"])
    data = load_dataset(cfg.data, cfg.seed)
    calibration = calibration_batch(data, cfg.data, cfg.quantize.calibration_samples, cfg.seed).numpy()
    baseline = baseline_file.read(args.baseline)
    print(f"reference {args.reference}, candidate {args.candidate}; {Limits()}")
    tally: dict[str, list[bool]] = {}

    def judge_one(kind: str, label: str, replaced: dict[str, Path]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            failed, why = check(candidate_dir(args.candidate, Path(tmp), replaced), args.reference, baseline)
        tally.setdefault(kind, []).append(failed)
        print(f"  {kind:10} {label:28} {'FAIL' if failed else 'pass'}  {why}", flush=True)

    print(f"\n1. the unchanged tree, {args.unchanged} checks")
    for i in range(args.unchanged):
        judge_one("unchanged", f"check {i + 1}", {})

    source = onnx.load(str(args.candidate / "onnx" / f"{PRUNED}.onnx"))
    with tempfile.TemporaryDirectory() as tmp:
        print("\n2. slowdowns with MACs, params and operators unchanged (pruned student and its int8 file)")
        for after, count in (("block", 2), ("block", 3), ("relu", 1), ("relu", 2), ("relu", 3)):
            fp32, int8 = Path(tmp) / f"{after}{count}.onnx", Path(tmp) / f"{after}{count}_int8.onnx"
            onnx.save(with_extra_adds(source, after, count), str(fp32))
            quantize_int8(fp32, int8, calibration, cfg.quantize, cfg.quantize.format)
            judge_one("slowdown", f"{count} Add(s) after every {after}", {PRUNED: fp32, INT8: int8})

        print(f"\n3. +~20% MACs, {args.heavier} variants")
        for i, (model, growth, added) in enumerate(heavier_variants(args.candidate / "checkpoints" / f"{PRUNED}.pt",
                                                                     cfg.data.crop, count=args.heavier)):
            fp32, int8 = Path(tmp) / f"heavy{i}.onnx", Path(tmp) / f"heavy{i}_int8.onnx"
            export_onnx(model, fp32, cfg.data.crop, cfg.export.opset, client_metadata(
                data.classes, cfg.data.mean, cfg.data.std, cfg.data.resize, cfg.data.crop,
                params=count_params(model), macs=count_macs(model, cfg.data.crop)))
            quantize_int8(fp32, int8, calibration, cfg.quantize, cfg.quantize.format)
            judge_one("+compute", f"{added} ({growth:+.1%} MACs)", {PRUNED: fp32, INT8: int8})

    print("\n| checks | gate failed | of |\n| --- | ---: | ---: |")
    for kind, results in tally.items():
        print(f"| {kind} | {sum(results)} | {len(results)} |")


if __name__ == "__main__":
    main()
