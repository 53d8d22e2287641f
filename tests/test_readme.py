"""The README's set-up commands are the ones CI runs, and its Quick Start works as written."""

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _ci_command(marker: str) -> str:
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    return lines[lines.index(marker) + 1].strip()


def _section(title: str) -> str:
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end >= 0 else None]


def _code_blocks(text: str) -> list[str]:
    """Fenced blocks, with backslash-continued lines joined."""
    return [block.replace("\\\n", " ") for block in re.findall(r"```\n(.*?)```", text, re.DOTALL)]


def _quick_start_commands() -> list[list[str]]:
    """Each Quick Start command line, split at `&&` into argv lists."""
    commands = []
    for block in _code_blocks(_section("Quick start")):
        for line in block.strip().splitlines():
            if line.startswith("python3 -m venv"):
                commands.append([shlex.split(part) for part in line.split("&&")])
    return commands


def test_readme_test_command_is_what_ci_runs():
    command = _ci_command("# README: test command")
    assert command in README


def test_readme_lists_the_system_packages_ci_installs():
    for package in ("libusb-1.0-0", "libvulkan1", "mesa-vulkan-drivers"):
        assert package in README


def test_quick_start_commands_do_not_share_a_virtual_environment():
    """The default-index install (CUDA torch on Linux) and the pinned test install each get
    their own venv: running one after the other replaces nothing."""
    pretrain, cpu_pretrain, tests = _quick_start_commands()
    venvs = [command[0][-1] for command in (pretrain, cpu_pretrain, tests)]
    assert venvs[0] == venvs[1] != venvs[2]
    assert all(arg.startswith(venvs[2] + "/") for arg in tests[1][:1] + tests[2][:1])
    # the CPU variant is the same job, with torch from PyTorch's CPU wheel index first
    assert cpu_pretrain[1][-2:] == ["--index-url", "$TORCH_CPU_INDEX"]
    assert cpu_pretrain[2:] == pretrain[1:]


def test_readme_names_no_package_index_host():
    """The CPU wheel index is named by what it is, not by its address."""
    for text in (README, (ROOT / "docs" / "cluster.md").read_text()):
        assert not re.search(r"--(extra-)?index-url +https?://", text)


def test_every_config_the_readme_names_exists_and_loads():
    from map3d.engine.config import load_config

    names = set(re.findall(r"configs/[\w/]+\.yaml", README))
    assert "configs/pretrain/image_digits_c64.yaml" in names  # the digits figure's recipe
    for name in sorted(names):
        load_config(ROOT / name)


def test_readme_links_the_cluster_guide():
    assert "(docs/cluster.md)" in README and (ROOT / "docs" / "cluster.md").is_file()


def test_quick_start_runs_as_written(tmp_path, monkeypatch, capsys):
    """`.venv/bin/map3d pretrain` is the `map3d` console script, i.e. `map3d.cli:main`; run it
    with the README's arguments in a fresh folder (the built-in experiment shrunk to two steps),
    then the finetuning command it prints, then the evaluation that one prints."""
    from map3d.engine import commands
    from map3d.engine.config import apply_overrides

    scripts = (ROOT / "pyproject.toml").read_text().split("[project.scripts]")[1]
    pretrain = _quick_start_commands()[0][-1]
    assert Path(pretrain[0]).name == "map3d" and 'map3d = "map3d.cli:main"' in scripts
    from map3d.cli import main

    shrink = {
        "pretrain": ["schedule.epochs=1", "data.options.num_samples=64", "data.batch_size=32"],
        "classify": [
            "schedule.epochs=1",
            "data.options.num_samples=32",
            "data.batch_size=16",
            "data.test_options.num_samples=16",
            "eval.votes=1",
        ],
    }
    full = commands.default_config
    monkeypatch.setattr(
        commands, "default_config", lambda task: apply_overrides(full(task), shrink[task])
    )
    monkeypatch.chdir(tmp_path)

    def next_command(heading: str) -> list[str]:
        lines = capsys.readouterr().out.splitlines()
        argv = shlex.split(lines[lines.index(heading) + 1])
        assert argv[0] == "map3d"
        return argv[1:]

    assert main(pretrain[1:]) == 0
    finetune = next_command("finetune from it:")
    assert finetune[:2] == ["finetune", "--pretrained"]
    assert main(finetune) == 0
    evaluate = next_command("evaluate with voting:")
    assert main(evaluate) == 0
    assert "oa:" in capsys.readouterr().out
    assert len(list(tmp_path.glob("runs/pretrain-*/last.pt"))) == 1


@pytest.mark.parametrize("section", ["Quick start", "Results so far"])
def test_time_and_result_claims_say_the_machine(section):
    """Every paragraph or bullet with a time, speed or accuracy figure names its machine."""
    for part in re.split(r"\n\n|\n- ", _section(section)):
        if re.search(r"\d[\d.,]* ?(minutes|min\b|s/step|samples/s|%)", part):
            assert re.search(r"CPU\s+VM|H100|H200", part), part


def test_ci_runs_the_slow_tests():
    """`slow` tests are part of the default run; only a quick local run deselects them."""
    pytest_args = _ci_command("# README: test command").split("pytest", 1)[1]
    assert " -m " not in f" {pytest_args} " and "slow" not in pytest_args
