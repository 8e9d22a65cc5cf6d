"""Keep triton from loading into a process whose OpenGL driver already loaded LLVM.

torchvision imports triton when it is installed (CUDA builds of torch bring it). triton ships
its own LLVM, which clashes with the LLVM that Mesa's software OpenGL (and AMD's drivers) have
already loaded into napari's process: the first widget opened from the Plugins menu then
segfaults. We never use triton (no torch.compile), so when LLVM is already mapped we hide it.
"""

from __future__ import annotations

import sys


def hide_triton_if_llvm_is_loaded() -> bool:
    if "triton" in sys.modules or not sys.platform.startswith("linux"):
        return False
    try:
        with open("/proc/self/maps") as maps:
            llvm_loaded = any("libLLVM" in line for line in maps)
    except OSError:
        return False
    if llvm_loaded:
        sys.modules["triton"] = None  # type: ignore[assignment]  # makes `import triton` raise ImportError
    return llvm_loaded
