"""model_card.md for the deployable model: what an edge team needs to use it and to trust it,
written from the run's own measurements (report.json), the ONNX file's metadata and the config."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import onnx

from compress.core.documents import Contention, Environment, ModelReport, Report
from compress.core.roster import BASELINE


def _io(path) -> tuple[str, list, str, str, list]:
    model = onnx.load(str(path), load_external_data=False)
    inp, out = model.graph.input[0], model.graph.output[0]
    def dims(v):
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type).name
    return inp.name, dims(inp), dtype, out.name, dims(out)


def _pruning_line(config: dict, pruning: dict | None) -> str:
    if not config["prune"]["enabled"] or not pruning:
        return "off"
    target = pruning.get("target", "macs")
    how = (f"target accuracy: at most {pruning.get('target_value')} val points below the unpruned student, in "
           f"rounds each followed by a short distillation fine-tune; the last round within it ships"
           if target == "accuracy" else
           f"target {target} = {pruning.get('target_value')}, then a distillation fine-tune")
    return (f"structured (torch-pruning, {pruning.get('importance')} importance, "
            f"{'global' if pruning.get('global_pruning') else 'uniform'}), {how}; reached "
            f"{pruning['params_ratio']:.3f}× params and {pruning['macs_ratio']:.3f}× MACs of the student")


@dataclass
class CardFacts:
    """Everything the card states, gathered by the package stage."""

    name: str  # the deployable model
    onnx_file: Path
    ort_file: str | None
    metadata: dict  # the ONNX file's metadata_props
    report: Report  # report.json
    config: dict
    config_hash: str
    teacher: dict  # arch, val_accuracy, source
    student_loss: str
    git_commit: str | None
    pruning: dict | None = None
    in_graph: dict | None = None  # agreement of model_with_preprocessing.onnx with the documented recipe
    choice: dict | None = None  # a search: the rule, the chosen point, the runner-up and what it would cost
    student: str | None = None  # the chosen point's architecture, when it is not config's distill.arch
    vs_student: VsStudent | None = None  # what pruning and int8 cost against the unpruned fp32 student
    phones: dict | None = None  # deploy/accelerators.json: the phone files and each file's accelerator coverage


@dataclass(frozen=True)
class VsStudent:
    """The deployable against the unpruned fp32 student it was made from, in accuracy points on
    val (what the budget reads) and on the report split."""

    name: str
    val_points: float  # deployable minus student, x100
    report_points: float
    budget: float  # deploy.max_accuracy_drop


def _recipes(f: CardFacts) -> str:
    """How the teacher and the student were trained (from scratch, or LP-FT from pretrained weights)."""
    found = f.report.recipes or {}
    arch = f.config["distill"]["arch"]
    student = found.get("student") or found.get(arch.replace(":", "_").replace("/", "_"))
    lines = [f"- {who} training: {words}" for who, words in (("teacher", found.get("teacher")), ("student", student))
             if words]
    return "".join(line + "\n" for line in lines)


def _student_origin(f: CardFacts) -> str:
    """Where the shipped model's student started: a single run's `student`, a search's by its name."""
    arch = f.config["distill"]["arch"]
    found = f.report.origins or {}
    return found.get("student") or found.get(arch.replace(":", "_").replace("/", "_")) or arch


def _files(f: CardFacts, env: Environment) -> str:
    quant = f.report.quantization
    vendor = quant.vendor_ops if quant and f.name.endswith("int8") else None
    ops = (f"needs {', '.join(vendor)} operators: loads in ONNX Runtime only" if vendor
           else "standard ONNX operators only: loads in any ONNX runtime")
    files = (f"- `model.onnx`: the model (ONNX, opset {f.config['export']['opset']}; {ops}), labels and "
             "preprocessing embedded as metadata_props\n")
    for rel, entry in ((f.phones or {}).get("files") or {}).items():
        if "for" in entry:
            files += (f"- `{rel.split('/')[-1]}`: for {entry['for']}: {entry['what']}; it agreed with model.onnx on "
                      f"{entry['top1_agreement_with_model_onnx']:.1%} of {entry['images']} val images (coverage below)\n")
    if f.ort_file:
        made_from = "model_mobile.onnx" if f.phones else "model.onnx"
        files += (f"- `model.ort`: {made_from} in ONNX Runtime format for mobile/minimal builds "
                  f"(basic optimisations applied by onnxruntime {env.onnxruntime}, portable across CPUs; "
                  "load it with that version or newer)\n"
                  "- `model.required_operators.config`: operators a minimal ORT build must include "
                  "(`build.sh --minimal_build --include_ops_by_config model.required_operators.config`)\n")
    if f.in_graph:
        files += ("- `model_with_preprocessing.onnx`: the same model taking decoded pixels (EXIF orientation applied), "
                  "uint8 RGB `[1, H, W, 3]` "
                  "of any size, with the preprocessing below inside the graph (standard ONNX, opset 18); it agreed "
                  f"with the recipe on {f.in_graph['top1_agreement']:.1%} of {f.in_graph['images']} images (max "
                  f"|logit difference| {f.in_graph['max_abs_logit_diff']:.3g}: PIL's and ONNX's resamplers round a "
                  "few pixels differently)\n")
    pte = quant.executorch if quant else None
    if pte:
        chosen = pte.candidates[pte.chosen]
        files += (f"- `model.pte`: ExecuTorch {pte.runtime_version} program (XNNPACK delegate, batch 1, the same "
                  f"NCHW float input as model.onnx), **{pte.chosen}**, chosen in ExecuTorch on this CPU: "
                  f"{chosen.p50_ms:.2f} ms, val accuracy {chosen.accuracy:.4f} ({pte.reason})\n")
    tfl = quant.litert if quant else None
    if tfl:
        shipped = tfl.candidates[tfl.chosen]
        files += (f"- `model.tflite`: LiteRT ({tfl.runtime_version}; converted by {tfl.converter}), **{tfl.chosen}**, "
                  f"chosen in LiteRT's interpreter on this CPU: {shipped.p50_ms:.2f} ms at batch 1 (the ONNX file of "
                  f"the same weights: {shipped.onnxruntime_p50_ms:.2f} ms in ONNX Runtime, interleaved), val accuracy "
                  f"{shipped.accuracy:.4f} ({tfl.reason}); top-1 agreement with that ONNX file "
                  f"{shipped.agreement_with_onnx:.1%} on {shipped.images} {f.report.figures_from} images (LiteRT section)\n")
    return files + "- `labels.txt`: class names, one per line, line i+1 = output index i\n"


def _litert(f: CardFacts) -> str:
    """How an Android client feeds model.tflite: layout, dtype, quantisation, what it must do itself."""
    quant = f.report.quantization
    tfl = quant.litert if quant else None
    if not tfl:
        return ""
    i, o = tfl.io["input"], tfl.io["output"]
    out_q = (f"int8 with scale {o['scale']:.6g} and zero point {o['zero_point']}: logit = scale × (q − zero point) "
             "(the arg-max can be taken on q directly)" if o["dtype"] == "int8" else f"{o['dtype']} logits")
    rows = "\n".join(f"| {n} | {c.p50_ms:.2f} | {c.onnxruntime_p50_ms:.2f} | {c.accuracy:.4f} | {c.report_accuracy:.4f} "
                     f"| {c.agreement_with_onnx:.4f} | {c.onnx_bytes / 1e6:.2f} |" for n, c in tfl.candidates.items())
    return f"""## LiteRT (model.tflite)

- input `{i['name']}`: **{i['dtype']} RGB pixels, NHWC {i['shape']}**: resize and centre-crop as in the
  preprocessing below (steps 1–3), then copy the bytes in; the /255 and the mean/std normalisation are
  inside the graph (no input quantisation to apply: scale {i['scale']:g}, zero point {i['zero_point']})
- output `{o['name']}`: {o['shape']}, {out_q}; index i is line i + 1 of `labels.txt`
- the file carries no TFLite metadata, so the Task Library's `ImageClassifier` refuses it: run it with
  LiteRT's `Interpreter` / `CompiledModel` API (the README's LiteRT client), or add metadata with `tflite_support`'s
  `ImageClassifierWriter` (normalisation mean 0, std 1, since it is in the graph) and labels.txt

| file | LiteRT p50 ms | ONNX Runtime p50 ms (same weights) | val accuracy | {f.report.figures_from} accuracy | top-1 agreement with ONNX | MB |
|---|---:|---:|---:|---:|---:|---:|
{rows}

"""


def _interface(f: CardFacts) -> str:
    in_name, in_shape, in_dtype, out_name, out_shape = _io(f.onnx_file)
    labels = json.loads(f.metadata["labels"])
    mean, std = json.loads(f.metadata["mean"]), json.loads(f.metadata["std"])
    resize, crop = int(f.metadata["resize"]), int(f.metadata["crop"])
    batch = "dynamic" if isinstance(in_shape[0], str) else f"fixed at {in_shape[0]}"
    return f"""## Input
- name `{in_name}`, shape {in_shape} (NCHW; `batch` is {batch}), dtype {in_dtype}

## Preprocessing (exactly this, in this order)
1. Decode the image, **apply its EXIF orientation** (phone photos store rotation as a tag: PIL's
   `ImageOps.exif_transpose`, Android's `ExifInterface`, iOS's `UIImage.imageOrientation`), and
   convert it to 8-bit RGB (drop alpha; grayscale → 3 equal channels).
2. Resize so the **shorter** side is {resize} px, keeping the aspect ratio (bilinear, as PIL's
   `Image.resize(..., BILINEAR)`); the longer side becomes `int({resize} * long / short)` (truncated).
3. Centre-crop {crop}×{crop} px: top = `round((H - {crop}) / 2)`, left = `round((W - {crop}) / 2)`, with
   Python's `round` (halves to even).
4. Scale to [0, 1] (divide by 255).
5. Per channel (R, G, B): subtract mean {mean}, divide by std {std}.
6. Lay out as [1, 3, {crop}, {crop}] float32 (channels first).

## Output
- name `{out_name}`, shape {out_shape}, float32 logits; apply softmax for probabilities.
- index i is the class on line i + 1 of `labels.txt`: {", ".join(f"{i} = {c}" for i, c in enumerate(labels))}
"""


def _interval(m: ModelReport) -> str:
    ci = m.accuracy_interval
    return f" (95% interval {ci.low:.4f}–{ci.high:.4f}, n = {ci.n})" if ci else ""


def _quality(f: CardFacts, m: ModelReport) -> str:
    report = f.report
    delta = m.vs_reference.accuracy_delta if m.vs_reference else 0.0
    reference = report.models[report.reference]
    d = report.dataset
    split = report.figures_from
    size = (d.test_size if split == "test" else d.val_size) if d else "?"
    caveat = ("held out: it chose nothing" if split == "test"
              else "also used to choose the int8 layout and prune rounds (too few images for a test split), so optimistic")
    top5 = f"\n- top-5 accuracy: {m.top5_accuracy:.4f}" if m.top5_accuracy is not None else ""
    counts = ((d.class_counts or {}).get(split) or {}) if d else {}
    per_class = "\n".join(f"| {c} | {counts.get(c, '?')} | " + (f"{a:.3f}" if a is not None else "– (no image)") + " |"
                          for c, a in m.per_class_accuracy.items())
    balanced = (f"\n- balanced accuracy (mean per-class recall; the classes are lopsided): {m.balanced_accuracy:.4f}"
                if d and d.lopsided() and m.balanced_accuracy is not None else "")
    copies = "".join(f"\n- ⚠ {w}" for w in (d.copy_warnings() if d else []))
    compared = "".join(f"\n- {c.model} vs {c.against}: {c.verdict} at 95% (Δ {100 * c.delta:+.2f} points, "
                       f"McNemar exact p = {c.p_value:.3g})" for c in report.comparisons
                       if f.name in (c.model, c.against) or c.against.endswith(BASELINE))
    return f"""## Quality ({split} split, {size} images of {d.name if d else 'the data'}, through ONNX Runtime; {caveat})
- top-1 accuracy: {m.accuracy:.4f}{_interval(m)} (teacher: {reference.accuracy:.4f}, Δ {100 * delta:+.2f} points){top5}{balanced}{compared}{copies}
{_vs_student(f, split)}{_degenerate(m, split)}- agreement with the teacher's top-1: {m.agreement:.4f}
- expected calibration error: {m.ece:.4f}

| class | images | accuracy |
|---|---:|---:|
{per_class}
"""


def _vs_student(f: CardFacts, split: str) -> str:
    v = f.vs_student
    if v is None:
        return ""
    verdict = "within" if v.val_points >= -v.budget - 1e-9 else "OUTSIDE"
    on_report = f"; {v.report_points:+.2f} pts on {split}" if split != "val" else ""
    return (f"- {v.val_points:+.2f} pts vs the unpruned student ({v.name}) on val, {verdict} the "
            f"{v.budget:g}-point budget{on_report}\n")


def _degenerate(m: ModelReport, split: str) -> str:
    if m.predicts_one_class is None:
        return ""
    return (f"- ⚠ DEGENERATE: it predicts {m.predicts_one_class!r} for every {split} image; its accuracy is that "
            f"class's share (shipped because deploy.allow_degenerate = true)\n")


def _speed(m: ModelReport, env: Environment, contention: Contention | None) -> str:
    size_x, speed_x = (m.vs_reference.size_x, m.vs_reference.speed_x) if m.vs_reference else (math.nan, math.nan)
    busy = ""
    if contention and contention.busy:
        busy = (" — ⚠ measured on a busy machine (" + "; ".join(contention.reasons) + "): not a trustworthy "
                "figure, re-measure on a quiet one")
    rows = "\n".join(
        f"| {b} | {v.p50:.2f} | {v.p90:.2f} | {v.p99:.2f} | {int(b) * 1000 / v.p50:.0f} |"
        for b, v in sorted(m.latency_ms_by_batch.items(), key=lambda kv: int(kv[0])))
    params = f"{m.params / 1e6:.2f} M parameters" if m.params else "parameters not recorded"
    macs = f"{m.macs / 1e6:.1f} M MACs per image" if m.macs else "MACs not recorded"
    return f"""## Size and speed (measured in this run)
- file: {m.onnx_bytes / 1e6:.2f} MB ({size_x:.1f}× smaller than the teacher); {params}, {macs}
- CPU: {env.cpu}, ISA flags {', '.join(env.isa) or 'none detected'}, {env.threads} ONNX Runtime threads of {env.cores} cores; onnxruntime {env.onnxruntime}, {env.os}
- speed-up over the teacher at batch 1, same process, interleaved: {speed_x:.2f}×{busy}

| batch | p50 ms | p90 ms | p99 ms | images/s at p50 |
|---:|---:|---:|---:|---:|
{rows}

int8 speed depends on the CPU's instruction set (VNNI/AMX help most); re-measure on the target
device with `compress bench model.onnx --data DIR`.
"""


def _runtimes(f: CardFacts) -> str:
    """Other runtimes the same file was run in, beside ONNX Runtime (empty when none installed)."""
    rows = []
    for runtime, r in f.report.runtimes.items():
        m = r.models.get(f.name)
        if m is None:
            continue
        rows.append(f"| {runtime} {r.version.split('-')[0]} | " + (
            f"yes | {m.accuracy or 0:.4f} | {m.agreement_with_onnxruntime or 0:.4f} | {m.latency_ms.p50:.2f} |"
            if m.loads and m.latency_ms else f"no ({m.error}) | – | – | – |"))
    if not rows:
        return ""
    return ("## Runtimes checked (same file, same images)\n\n| runtime | loads | accuracy | top-1 agreement with "
            "ONNX Runtime | p50 ms @ batch 1 (in-process) |\n|---|---|---:|---:|---:|\n" + "\n".join(rows) + "\n\n")


def _accelerators(f: CardFacts) -> str:
    """Each deploy/ file's share on the phone accelerators (ONNX Runtime's mobile usability checker)."""
    if not f.phones:
        return ""
    rows = []
    for rel, entry in f.phones["files"].items():
        for c in entry["coverage"]:
            missing = ", ".join(c["unsupported_ops"]) or "–"
            rows.append(f"| {rel.split('/')[-1]} | {c['provider']} | {c['supported']}/{c['nodes']} | "
                        f"{c['partitions']} | {c['verdict']} | {missing} |")
    return ("## Phone accelerators (ONNX Runtime Mobile, by its usability checker)\n\n| file | provider | nodes taken "
            "| partitions | verdict | operators it lacks |\n|---|---|---:|---:|---|---|\n" + "\n".join(rows)
            + f"\n\nAdvice: {f.phones['advice']}. One partition covering every node is what runs on the "
              "accelerator; each extra partition is a copy to and from the CPU.\n\n")


def render(f: CardFacts) -> str:
    m, env = f.report.models[f.name], f.report.environment
    quant = f.report.quantization
    labels = json.loads(f.metadata["labels"])
    return f"""# Model card: {f.name}

An image classifier with {len(labels)} classes, distilled from a {f.teacher['arch']} teacher by
compress (commit {f.git_commit or 'unknown'}, config sha256 `{f.config_hash}`).

## Files
{_files(f, env)}
{_interface(f)}
{_quality(f, m)}
{_speed(m, env, f.report.benchmark.contention)}
{_runtimes(f)}{_accelerators(f)}{_litert(f)}## How it was made
- teacher: {f.teacher.get('source') or f.teacher['arch']}; accuracy {f.teacher.get('val_accuracy', float('nan')):.4f} on the report split
- student: {_student_origin(f)}; loss {f.student_loss}
{_recipes(f)}- pruning: {_pruning_line(f.config, f.pruning)}
- quantization: {quant.chosen if quant else 'off'} ({quant.reason if quant else 'quantize.enabled = false'})
{_choice(f)}"""


def _choice(f: CardFacts) -> str:
    """Why this model, when a search chose it among many."""
    if not f.choice:
        return ""
    runner = f.choice.get("runner_up")
    cost = f" (it would have cost {f.choice['runner_up_cost']})" if f.choice.get("runner_up_cost") else ""
    return (f"\n## Why this model\nChosen among every point of a search by {f.choice['rule']}.\n"
            + (f"Runner-up: {runner}{cost}.\n" if runner else "No runner-up: it was the only point within the rule.\n"))
