"""What this machine can run fast: the CPU's model and the instruction-set flags that pick kernels (AVX2,
AVX-512, VNNI for int8 dot products, bf16, AMX), its cores, and the library versions. The runtime's choice of
backend and precision is kept per (model, this record, threads), and every benchmark result carries it: CPUs
differ from machine to machine, so a speed compares only with speeds measured on the same one."""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

KERNEL_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
LIBRARIES = ("torch", "onnxruntime", "openvino")


@dataclass(frozen=True)
class Machine:
    cpu: str
    cores: int
    flags: tuple[str, ...] = ()
    gpu: str | None = None  # the CUDA device's name, when one is visible

    @property
    def bf16(self) -> bool:
        """bf16 matrix kernels: AVX512-BF16 or AMX (without them bf16 runs emulated, slower than fp32)."""
        return "avx512_bf16" in self.flags or "amx_bf16" in self.flags

    @property
    def kernel_class(self) -> str:
        """A short name for the CPU class speeds are grouped by: amx, avx512-bf16, avx512-vnni, avx512, avx2."""
        for flag, name in (("amx_bf16", "amx"), ("avx512_bf16", "avx512-bf16"), ("avx512_vnni", "avx512-vnni"),
                           ("avx512f", "avx512"), ("avx2", "avx2")):
            if flag in self.flags:
                return name
        return "baseline"

    def describe(self) -> str:
        return f"{self.cpu} ({self.cores} cores; {', '.join(self.flags) or 'no AVX2'})"


@lru_cache(maxsize=1)
def this_machine() -> Machine:
    """Read from /proc/cpuinfo (Linux); elsewhere torch's dispatch level stands in for the flags."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    line = lambda key: next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith(key)), "")  # noqa: E731
    flags = line("flags").split()
    if not flags:
        import torch

        level = torch.backends.cpu.get_cpu_capability().lower()  # "avx2", "avx512", "default", ...
        flags = ["avx2"] + (["avx512f"] if "avx512" in level else []) if level != "default" else []
    return Machine(cpu=line("model name") or platform.processor() or platform.machine(), cores=os.cpu_count() or 1,
                   flags=tuple(f for f in KERNEL_FLAGS if f in flags), gpu=_gpu())


def _gpu() -> str | None:
    import sys

    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_name(0)


def versions() -> dict:
    """attnseg's and the runtimes' versions (those installed)."""
    from ... import __version__

    out = {"attnseg": __version__, "python": platform.python_version()}
    for mod in LIBRARIES:
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return out


def record(threads: int | None = None) -> dict:
    """What a benchmark result records about where it ran."""
    m = this_machine()
    out = {"cpu": m.cpu, "cores": m.cores, "flags": list(m.flags), "cpu_class": m.kernel_class}
    if m.gpu:
        out["gpu"] = m.gpu
    if threads is not None:
        out["threads"] = threads
    return {**out, **versions()}
