"""What a benchmark ran on: CPU vendor, model and ISA flags, cores, threads, OS, library versions, GPU.

int8 and fp32 speed depend on the instruction set (AVX2 vs AVX512-VNNI vs AMX), so every report
carries this; the gate times latency A/B on the runner itself rather than trusting another
machine's figures (compress.gate.ab).
"""
from __future__ import annotations

import os
import platform

ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16", "neon", "asimd")


def _cpuinfo() -> tuple[str, str, set[str]]:
    """(vendor, model name, flags) from /proc/cpuinfo; the platform's words where it is absent."""
    model, vendor, flags = platform.processor() or platform.machine(), "", set[str]()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key == "vendor_id" and not vendor:
                    vendor = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return vendor, model, flags


def environment(threads: int) -> dict:
    import numpy
    import onnxruntime
    import torch
    vendor, model, flags = _cpuinfo()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": model, "vendor": vendor, "isa": sorted(f for f in ISA_FLAGS if f in flags), "cores": os.cpu_count(),
        "threads": threads, "os": f"{platform.system()} {platform.release()}", "machine": platform.machine(),
        "python": platform.python_version(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
        "numpy": numpy.__version__, "gpu": gpu,
    }
