"""Where a run computed: the libraries, the processor and the threads, recorded in its results.

A collapse sits on a knife's edge, and float results differ between processors and library
versions, so a round retrained on another machine may not repeat (issue 23's seed 11). A
run records its environment when it starts and at every resume, so that a difference between
two runs of one config can be traced to the machine instead of guessed at.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

LIBRARIES = ("lightning", "segmentation-models-pytorch", "albumentations", "numpy")
# the vector extensions that choose torch's CPU kernels (a virtual CPU's model name may not)
CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile")
# settings that cap the instruction set torch's kernels use: ATen's own, oneDNN's (the
# convolutions) and MKL's (matmuls). The same config trains to other weights under another cap
# (benchmarks/training.py --isa), so a run records them when they are set.
ISA_SETTINGS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_CBWR")


def _cpuinfo(key: str) -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":", 1)[0].strip().lower() == key:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` says."""
    return _cpuinfo("model name") or platform.processor() or platform.machine() or "unknown"


def cpu_features() -> list[str]:
    """Which of :data:`CPU_FEATURES` the processor has (empty where the flags are unknown)."""
    flags = set((_cpuinfo("flags") or "").split())
    return [f for f in CPU_FEATURES if f in flags]


def environment() -> dict[str, Any]:
    """A short JSON record of this process's machine and libraries (no host name: runs are
    shared between labs)."""
    import torch

    versions = {"torch": torch.__version__}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        **versions,
        "os": f"{platform.system()} {platform.machine()}",
        "cpu": cpu_model(),
        "cpu_features": cpu_features(),
        "cpu_count": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "isa_settings": {k: os.environ[k] for k in ISA_SETTINGS if k in os.environ},
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
    }
