"""The README's set-up commands are the ones CI runs."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _ci_command(marker: str) -> str:
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    return lines[lines.index(marker) + 1].strip()


def test_readme_test_command_is_what_ci_runs():
    command = _ci_command("# README: test command")
    assert command in (ROOT / "README.md").read_text()


def test_readme_lists_the_system_packages_ci_installs():
    readme = (ROOT / "README.md").read_text()
    for package in ("libusb-1.0-0", "libvulkan1", "mesa-vulkan-drivers"):
        assert package in readme


def test_ci_runs_the_slow_tests():
    """`slow` tests are part of the default run; only a quick local run deselects them."""
    pytest_args = _ci_command("# README: test command").split("pytest", 1)[1]
    assert " -m " not in f" {pytest_args} " and "slow" not in pytest_args
