"""Build mamba-ssm's selective-scan CUDA extension from its source release, for one GPU
architecture, to benchmark and test map3d side by side with it on a machine with no package
registry (the source tarball travels with the working tree).

    python tools/gpu/build_mamba_ssm.py .whl/mamba_ssm-2.2.6.post3.tar.gz WORKDIR --arch 9.0
    export PYTHONPATH=WORKDIR/build:WORKDIR/shim:$PYTHONPATH   # then `import mamba_ssm`

Only `selective_scan_cuda` is compiled (mamba-ssm's other kernels are Triton); causal-conv1d is
not built, so mamba-ssm's Mamba layers take their non-fused path.

The extracted sources (WORKDIR/src) are not modified. mamba-ssm 2.2's package `__init__`
imports its language model, whose generation utilities need an older transformers; the
benchmarks use only the ops and layers. So WORKDIR/shim holds a stand-in `mamba_ssm` package
(first on PYTHONPATH) whose `__init__` runs the real one with that one import made optional and
loads every submodule from the real package folder.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import tarfile
import time

LM_HEAD_IMPORT = "from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel"

SHIM_INIT = '''"""Stand-in for mamba_ssm/__init__.py, written by tools/gpu/build_mamba_ssm.py:
runs the real package __init__ with its language-model import made optional (it needs an older
transformers); submodules load from the real package folder, which is left as released."""

import os as _os

__path__ = [{package!r}]
__file__ = _os.path.join(__path__[0], "__init__.py")
with open(__file__) as _f:
    _source = _f.read()
_line = {line!r}
_source = _source.replace(_line, "try:\\n    " + _line + "\\nexcept ImportError:\\n    pass")
exec(compile(_source, __file__, "exec"))
del _os, _f, _source, _line
'''


def write_shim(package_dir: str, shim_root: str) -> str:
    """Write `shim_root/mamba_ssm/__init__.py`, a stand-in for the package at `package_dir`
    (see the module docstring); returns `shim_root`, the folder to put first on PYTHONPATH."""
    shim = os.path.join(shim_root, "mamba_ssm")
    os.makedirs(shim, exist_ok=True)
    text = SHIM_INIT.format(package=os.path.abspath(package_dir), line=LM_HEAD_IMPORT)
    with open(os.path.join(shim, "__init__.py"), "w") as f:
        f.write(text)
    return shim_root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tarball")
    parser.add_argument("workdir")
    parser.add_argument("--arch", default="9.0", help="TORCH_CUDA_ARCH_LIST entry")
    parser.add_argument("--jobs", default=str(os.cpu_count() or 8))
    args = parser.parse_args(argv)

    start = time.time()
    src_root = os.path.join(args.workdir, "src")
    build = os.path.join(args.workdir, "build")
    os.makedirs(build, exist_ok=True)
    with tarfile.open(args.tarball) as tar:
        top = tar.getnames()[0].split("/")[0]
        tar.extractall(args.workdir, filter="data")
    if not os.path.exists(src_root):
        os.symlink(os.path.join(args.workdir, top), src_root)
    shim_root = write_shim(os.path.join(src_root, "mamba_ssm"), os.path.join(args.workdir, "shim"))
    csrc = os.path.join(src_root, "csrc", "selective_scan")
    sources = [os.path.join(csrc, "selective_scan.cpp")] + sorted(
        glob.glob(os.path.join(csrc, "selective_scan_*.cu"))
    )
    os.environ["TORCH_CUDA_ARCH_LIST"] = args.arch
    os.environ["MAX_JOBS"] = args.jobs
    from torch.utils.cpp_extension import load

    load(
        name="selective_scan_cuda",
        sources=sources,
        extra_cflags=["-O3", "-std=c++17"],
        extra_cuda_cflags=[
            "-O3",
            "-std=c++17",
            "-U__CUDA_NO_HALF_OPERATORS__",
            "-U__CUDA_NO_HALF_CONVERSIONS__",
            "-U__CUDA_NO_BFLOAT16_OPERATORS__",
            "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
            "-U__CUDA_NO_BFLOAT162_OPERATORS__",
            "-U__CUDA_NO_BFLOAT162_CONVERSIONS__",
            "--expt-relaxed-constexpr",
            "--expt-extended-lambda",
            "--use_fast_math",
        ],
        extra_include_paths=[csrc],
        build_directory=build,
        verbose=False,
    )
    print(f"built selective_scan_cuda for sm_{args.arch} in {time.time() - start:.0f} s: {build}")
    print(f"PYTHONPATH={build}:{shim_root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
