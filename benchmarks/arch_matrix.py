"""Which architectures go through which stages: one tiny `compress run` per student architecture
(a fresh process each, a ResNet18 teacher, small real digit images), then a table architecture ×
{train, prune, export, int8, QAT, OpenVINO, ExecuTorch, Grad-CAM} with ✓, `refused (reason)` or
✗, and params, MACs and batch-1 p50 of the fp32 and int8 students on this CPU.

    python benchmarks/arch_matrix.py                     # the default list (torchvision + timm)
    python benchmarks/arch_matrix.py --archs mobilenet_v2,timm:ghostnet_100 --crop 32

A run refused before any work (exit 2, one line) is rerun without the stage it names, so the other
columns are still measured: `prune` refused → `prune.enabled=false`. QAT runs with
`quantize.qat=on` for one epoch; OpenVINO is the benchmark's second runtime (the openvino extra);
ExecuTorch writes and runs the final fp32 student's .pte (the executorch extra). Prints markdown.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

TORCHVISION = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0",
               "efficientnet_v2_s", "regnet_y_400mf", "regnet_x_400mf", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0",
               "mnasnet0_5", "mnasnet1_0", "squeezenet1_1", "densenet121", "convnext_tiny", "googlenet", "alexnet",
               "vgg11_bn", "wide_resnet50_2", "resnext50_32x4d", "swin_t", "vit_b_16"]
TIMM = ["timm:mobilenetv4_conv_small", "timm:mobilenetv3_small_050", "timm:efficientnet_lite0", "timm:ghostnet_100",
        "timm:repvgg_a0", "timm:mobileone_s0", "timm:fastvit_t8", "timm:convnext_nano", "timm:regnety_002",
        "timm:resnet18", "timm:lcnet_050", "timm:vit_tiny_patch16_224"]
STAGES = ("train", "prune", "export", "int8", "QAT", "OpenVINO", "ExecuTorch", "Grad-CAM")
OPTIONAL = {"prune": ("prune", "prune.enabled=false"), "quantize.qat": ("QAT", "quantize.qat=off")}  # refusal -> rerun


def write_images(root: Path, classes: int = 4, per_class: int = 30, size: int = 40) -> Path:
    """A small class-folder tree of real handwritten digits (scikit-learn's), as PNG files."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits
    if root.is_dir():
        return root
    digits = load_digits()
    for c in range(classes):
        folder = root / f"digit{c}"
        folder.mkdir(parents=True)
        for i in np.flatnonzero(digits.target == c)[:per_class]:
            pixels = (digits.images[i] * (255 / 16)).astype(np.uint8)
            Image.fromarray(pixels).resize((size, size), Image.Resampling.NEAREST).convert("RGB").save(folder / f"{i}.png")
    return root


def run(arch: str, data: Path, out: Path, crop: int, extra: list[str]) -> tuple[int, str, float]:
    settings = {"data.resize": crop + crop // 8, "data.crop": crop, "data.batch_size": 16, "data.augment": "crop",
                "teacher.arch": "resnet18", "teacher.epochs": 1, "distill.arch": arch, "distill.epochs": 1,
                "distill.baseline": "false", "distill.weights": "none", "teacher.weights": "none",
                "prune.epochs": 1, "quantize.qat": "on", "quantize.qat_epochs": 1,
                "quantize.candidates": '["qdq_u8s8"]', "quantize.calibration_samples": 16, "export.ort": "false",
                "bench.runs": 40, "bench.processes": 1, "device": "cpu"}
    command = [sys.executable, "-P", "-c", "import sys; from compress.pipeline.cli import main; sys.argv[0] = "
               "'compress'; main()", "run", "--data", str(data), "--out", str(out), "--quiet"]
    for key, value in settings.items():
        command += ["--set", f"{key}={value}"]
    for item in extra:
        command += ["--set", item]
    t0 = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    return done.returncode, (lines[-1] if lines else ""), time.perf_counter() - t0


def executorch_cell(out: Path, final: str, crop: int) -> str:
    if importlib.util.find_spec("executorch") is None:
        return "– (extra not installed)"
    import numpy as np

    from compress.core.architectures import reparameterize
    from compress.core.models import load_model
    from compress.exports.executorch import ExecuTorchModel, write_pte
    try:
        model = reparameterize(load_model(out / "checkpoints" / f"{final}.pt")[0])
        write_pte(model, out / "matrix-probe.pte", crop)
        ExecuTorchModel(out / "matrix-probe.pte", 1).logits(np.zeros((1, 3, crop, crop), np.float32))
        return "✓"
    except Exception as exc:
        return f"✗ ({type(exc).__name__})"


def row(arch: str, data: Path, root: Path, crop: int) -> dict:
    out = root / arch.replace(":", "_")
    code, message, seconds = run(arch, data, out, crop, [])
    cells = {s: "–" for s in STAGES}
    extra: list[str] = []
    while code == 2:  # refused up front for a stage that can be turned off: measure the rest without it
        where = message.removeprefix("error: ").split(":")[0]
        column, setting = next(((c, s) for key, (c, s) in OPTIONAL.items() if where.startswith(key)), (None, None))
        if column is None or setting is None or setting in extra:
            break
        cells[column] = "refused (" + message.split(": ", 2)[-1].removeprefix(arch + " ")[:60] + ")"
        extra.append(setting)
        code, message, more = run(arch, data, out, crop, extra)
        seconds += more
    if code != 0:  # refused before any work (no manifest yet), or failed in a stage (✗)
        verdict = "refused" if code == 2 and not (out / "manifest.json").is_file() else "✗"
        reason = message.removeprefix("error: ").split(": ", 1)[-1].removeprefix(arch + " ")[:80]
        return {"arch": arch, **{s: cells[s] if cells[s] != "–" else f"{verdict} ({reason})" for s in STAGES},
                "seconds": seconds}
    report = json.loads((out / "report.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    final = "student" if "prune.enabled=false" in extra else "student_pruned"
    q = report.get("quantization") or {}
    qat = q.get("qat")
    vino = (report.get("runtimes") or {}).get("openvino", {}).get("models", {}).get(final)
    cam = manifest["stages"]["report"]["summary"]
    cells.update({
        "train": "✓", "export": "✓", "int8": "✓" if "student_int8" in report["models"] else "✗",
        "QAT": cells["QAT"] if "quantize.qat=off" in extra else "✓" if qat else "✗",
        "OpenVINO": ("– (extra not installed)" if "openvino" not in (report.get("runtimes") or {}) else
                     f"✓ ({vino['agreement_with_onnxruntime']:.0%} agree)" if vino and vino.get("loads") else "✗"),
        "ExecuTorch": executorch_cell(out, final, crop),
        "Grad-CAM": "✓" if cam.get("gradcam_top20_iou_mean") is not None else
                    f"skipped ({(cam.get('gradcam_note') or '')[:50]})"})
    if "prune.enabled=false" not in extra:
        cells["prune"] = "✓"
    m, i8 = report["models"][final], report["models"].get("student_int8")
    return {"arch": arch, **cells, "params_m": (m["params"] or 0) / 1e6, "macs_m": (m["macs"] or 0) / 1e6,
            "fp32_ms": m["latency_ms"]["p50"], "int8_ms": i8["latency_ms"]["p50"] if i8 else None, "seconds": seconds}


def markdown(rows: list[dict], crop: int) -> str:
    head = ["architecture", *STAGES, "params (M)", "MACs (M)", "fp32 p50 ms", "int8 p50 ms", "run s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        nums = [f"{r['params_m']:.2f}", f"{r['macs_m']:.1f}", f"{r['fp32_ms']:.2f}",
                f"{r['int8_ms']:.2f}" if r.get("int8_ms") else "–"] if "params_m" in r else ["–"] * 4
        lines.append("| " + " | ".join([r["arch"], *[r[s] for s in STAGES], *nums, f"{r['seconds']:.0f}"]) + " |")
    return f"Student architectures at {crop} px (ResNet18 teacher, 1 epoch each):\n\n" + "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default=None, help="comma-separated; default: the built-in torchvision + timm list")
    ap.add_argument("--crop", type=int, default=64, help="64: a stride-32 map is 2x2, so Grad-CAM has a location")
    ap.add_argument("--out", type=Path, default=Path("runs/arch-matrix"))
    args = ap.parse_args()
    archs = args.archs.split(",") if args.archs else TORCHVISION + (TIMM if importlib.util.find_spec("timm") else [])
    data = write_images(args.out / "data")
    table = args.out / "matrix.json"
    earlier = {r["arch"]: r for r in json.loads(table.read_text())} if table.is_file() else {}  # rows kept
    for arch in archs:
        earlier[arch] = row(arch, data, args.out, args.crop)
        print(f"{arch}: " + ", ".join(f"{s} {earlier[arch][s]}" for s in STAGES), file=sys.stderr, flush=True)
        table.write_text(json.dumps(list(earlier.values()), indent=2))
    print(markdown(list(earlier.values()), args.crop))


if __name__ == "__main__":
    main()
