"""Is the student smaller than its teacher? Distilling into a network with as many parameters or
MACs as the teacher gives nothing an edge team wants (a timm EfficientNet-Lite0 teacher has 3.4 M
parameters; the default ResNet18 student 11.2 M), so a single run says so before training, in one
line naming well-known students that are smaller, counted at this run's crop and classes."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from compress.core.architectures import create
from compress.core.models import count_macs, count_params

# torchvision students worth naming, small to large; each is counted, none is assumed small
CANDIDATES = ("mobilenet_v3_small", "shufflenet_v2_x1_0", "regnet_x_400mf", "mobilenet_v3_large", "efficientnet_b0",
              "resnet18")


@dataclass(frozen=True)
class Size:
    params: int
    macs: int | None  # None for an ONNX teacher (its parameters are counted from the file)

    def smaller_than(self, other: Size) -> bool:
        return self.params < other.params and (self.macs is None or other.macs is None or self.macs < other.macs)


@lru_cache(maxsize=64)  # a sweep or a test session asks about the same few architectures
def arch_size(arch: str, classes: int, crop: int) -> Size:
    model = create(arch, classes)
    return Size(count_params(model), count_macs(model, crop))


def onnx_size(path: str) -> Size:
    import math

    import onnx
    model = onnx.load(path, load_external_data=False)
    return Size(sum(math.prod(t.dims) for t in model.graph.initializer), None)


def teacher_size(onnx_file: str, checkpoint: str, arch: str, classes: int, crop: int) -> Size:
    """The teacher as configured: an ONNX file, a checkpoint (its recorded structure) or an architecture."""
    if onnx_file:
        return onnx_size(onnx_file)
    if checkpoint:
        from compress.core.models import load_model
        model, _ = load_model(checkpoint)
        return Size(count_params(model), count_macs(model, crop))
    return arch_size(arch, classes, crop)


def not_smaller_warning(student: str, student_size: Size, teacher: str, teacher_size: Size, classes: int,
                        crop: int) -> str | None:
    """One line when the student is not smaller than the teacher (params or MACs), else None."""
    if student_size.smaller_than(teacher_size):
        return None
    smaller = [a for a in CANDIDATES if a != student and arch_size(a, classes, crop).smaller_than(teacher_size)]
    macs = (f", {student_size.macs / 1e6:.1f} M vs {teacher_size.macs / 1e6:.1f} M MACs"
            if student_size.macs is not None and teacher_size.macs is not None else "")
    named = (f"smaller students: {', '.join(smaller)} (distill.arch)" if smaller
             else "none of " + ", ".join(CANDIDATES) + " is smaller either")
    return (f"the student {student} is not smaller than the teacher {teacher} ({student_size.params / 1e6:.1f} M vs "
            f"{teacher_size.params / 1e6:.1f} M parameters{macs}); {named}")
