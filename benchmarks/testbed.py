"""A testbed: the CPU signature that latency and trained-model accuracy depend on.

Latency ratios move with the instruction set (int8 kernels use VNNI or AMX when present), and
training is not bit-reproducible across BLAS kernels, so a model trained for one epoch lands on
different accuracies on different CPUs. A baseline therefore keeps one entry per testbed, and the
gate compares those figures only against the entry of the CPU it runs on.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

# the flag named in a short description: the one that decides int8 speed, best first
_DECISIVE = ("amx_int8", "avx512_vnni", "avx512f", "avx2", "asimd", "neon")
_VENDORS = (("intel", "GenuineIntel"), ("amd", "AuthenticAMD"))


@dataclass(frozen=True)
class Testbed:
    vendor: str
    cpu: str
    isa: tuple[str, ...]
    threads: int

    @classmethod
    def from_environment(cls, env: dict) -> Testbed:
        """The testbed a report's (or an old baseline's) `environment` describes; older files
        recorded no vendor, which is then read off the model name."""
        cpu = str(env.get("cpu") or "unknown CPU")
        vendor = env.get("vendor") or next((v for word, v in _VENDORS if word in cpu.lower()), "")
        return cls(vendor=vendor, cpu=cpu, isa=tuple(sorted(env.get("isa") or ())), threads=int(env.get("threads") or 0))

    @classmethod
    def from_dict(cls, d: dict) -> Testbed:
        return cls(vendor=d.get("vendor", ""), cpu=d["cpu"], isa=tuple(sorted(d.get("isa", ()))),
                   threads=int(d.get("threads", 0)))

    def to_dict(self) -> dict:
        return {**asdict(self), "isa": list(self.isa)}

    def describe(self) -> str:
        """"AMD EPYC (avx512_vnni, 2 threads)": the model and the flag that decides int8 speed."""
        decisive = next((f for f in _DECISIVE if f in self.isa), "no SIMD flags read")
        return f"{self.cpu} ({decisive}, {self.threads} threads)"

    def likeness(self, other: Testbed) -> tuple[int, int, int]:
        """How close another testbed is (higher is closer): same vendor, shared ISA flags, same threads."""
        return (self.vendor == other.vendor, len(set(self.isa) & set(other.isa)) - len(set(self.isa) ^ set(other.isa)),
                self.threads == other.threads)
