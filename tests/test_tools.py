"""Parts of the GPU-machine tools (tools/gpu/) that can be checked without a GPU."""

import subprocess
import sys

from tools.gpu.build_mamba_ssm import LM_HEAD_IMPORT, write_shim


def test_mamba_ssm_shim_leaves_the_package_as_released(tmp_path):
    """The shim runs the package's own __init__ with the language-model import made optional,
    loads submodules from the real folder, and writes nothing into it."""
    package = tmp_path / "src" / "mamba_ssm"
    (package / "models").mkdir(parents=True)
    (package / "ops").mkdir()
    init = (
        "__version__ = '2.2.test'\n"
        "from mamba_ssm.ops.scan import selective_scan_fn\n"
        f"{LM_HEAD_IMPORT}\n"
    )
    files = {
        package / "__init__.py": init,
        package / "ops" / "__init__.py": "",
        package / "ops" / "scan.py": "def selective_scan_fn():\n    return 'scan'\n",
        package / "models" / "__init__.py": "",
        package / "models" / "mixer_seq_simple.py": "import a_transformers_release_too_new\n",
    }
    for path, text in files.items():
        path.write_text(text)
    shim = write_shim(str(package), str(tmp_path / "shim"))
    code = (
        "import mamba_ssm, mamba_ssm.ops.scan as s; "
        "print(mamba_ssm.__version__, mamba_ssm.selective_scan_fn(), s.__file__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": shim},
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    version, result, where = out.stdout.split()
    assert (version, result, where) == ("2.2.test", "scan", str(package / "ops" / "scan.py"))
    assert {path: path.read_text() for path in files} == files
    assert sorted(p.name for p in package.iterdir()) == ["__init__.py", "models", "ops"]
