"""What a benchmark ran on: CPU model and ISA flags, cores, threads, OS, library versions, GPU.

int8 speed depends on the instruction set (AVX2 vs AVX512-VNNI vs AMX), so every report
carries this and the gate warns when absolute times are compared across different CPUs.
"""
from __future__ import annotations

import os
import platform

ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16", "neon", "asimd")


def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model, flags


def environment(threads: int) -> dict:
    import numpy
    import onnxruntime
    import torch
    model, flags = _cpuinfo()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": model, "isa": sorted(f for f in ISA_FLAGS if f in flags), "cores": os.cpu_count(),
        "threads": threads, "os": f"{platform.system()} {platform.release()}", "machine": platform.machine(),
        "python": platform.python_version(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
        "numpy": numpy.__version__, "gpu": gpu,
    }
