"""Build mamba-ssm's selective-scan CUDA extension from its source release, for one GPU
architecture, to benchmark and test map3d side by side with it on a machine with no package
registry (the source tarball travels with the working tree).

    python benchmarks/build_mamba_ssm.py .whl/mamba_ssm-2.2.6.post3.tar.gz /tmp/mamba --arch 9.0
    export PYTHONPATH=/tmp/mamba/build:/tmp/mamba/src:$PYTHONPATH   # then `import mamba_ssm`

Only `selective_scan_cuda` is compiled (mamba-ssm's other kernels are Triton); causal-conv1d is
not built, so mamba-ssm's Mamba layers take their non-fused path.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import tarfile
import time


def _skip_lm_head_import(init_py: str) -> None:
    """mamba-ssm 2.2's package __init__ imports its language model, whose generation utilities
    need an older transformers; the benchmarks use only the ops and layers, so make that one
    import optional."""
    with open(init_py) as f:
        text = f.read()
    line = "from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel"
    if line in text and "except ImportError" not in text:
        text = text.replace(line, f"try:\n    {line}\nexcept ImportError:\n    pass")
        with open(init_py, "w") as f:
            f.write(text)


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
    _skip_lm_head_import(os.path.join(src_root, "mamba_ssm", "__init__.py"))
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
            "-O3", "-std=c++17",
            "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
            "-U__CUDA_NO_BFLOAT16_OPERATORS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
            "-U__CUDA_NO_BFLOAT162_OPERATORS__", "-U__CUDA_NO_BFLOAT162_CONVERSIONS__",
            "--expt-relaxed-constexpr", "--expt-extended-lambda", "--use_fast_math",
        ],
        extra_include_paths=[csrc],
        build_directory=build,
        verbose=False,
    )
    print(f"built selective_scan_cuda for sm_{args.arch} in {time.time() - start:.0f} s: {build}")
    print(f"PYTHONPATH={build}:{src_root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
