"""Every refusal of every command is one line on stderr and exit status 2; bugs keep their
traceback; `--debug` / MAP3D_DEBUG=1 show it for refusals too; Ctrl-C exits with 130."""

import errno
import io
from pathlib import Path

import pytest
import torch

from map3d import cli
from map3d.cli import main
from map3d.command import Command
from map3d.data import DatasetFormatError
from map3d.engine.checkpoint import CheckpointError, CheckpointWriteError, load_checkpoint
from map3d.engine.config import ConfigError
from map3d.engine.distributed import DistributedTimeoutError
from map3d.engine.rundir import RunDirError
from map3d.errors import MissingDependencyError, OptionError

RAISED: list[BaseException] = []


class FullDisk(io.FileIO):
    """A file on a full disk: every write fails with ENOSPC (no file name, as the OS says)."""

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")


def _raise(args):
    raise RAISED[0]


BOOM = Command(help="raises the test's exception", add_arguments=lambda p: None, run=_raise)


@pytest.fixture
def boom(monkeypatch):
    """`map3d boom` raises `RAISED[0]`."""
    monkeypatch.setitem(cli.COMMANDS, "boom", f"{__name__}:BOOM")
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    RAISED.clear()
    return RAISED


def one_line_error(capsys, command: str) -> str:
    """The error line of stderr: its last line, with no traceback (log lines may precede it)."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and "error:" not in "".join(lines[:-1]), err
    assert lines[-1].startswith(f"map3d {command}: error: "), err
    return lines[-1]


@pytest.mark.parametrize(
    "error, expected",
    [
        (
            DatasetFormatError("/d/modelnet40_train.txt", "duplicate entry", "line 3"),
            "/d/modelnet40_train.txt (line 3): duplicate entry",
        ),
        (
            CheckpointError("/c/last.pt: not a readable checkpoint (bad zip\nfile)"),
            "/c/last.pt: not a readable checkpoint (bad zip file)",
        ),
        (ConfigError("train.lr: unknown key"), "train.lr: unknown key"),
        (FileNotFoundError("checkpoint not found: /c/x.pt"), "checkpoint not found: /c/x.pt"),
        (
            OSError(errno.ENOSPC, "No space left on device", "/runs/a/last.pt"),
            "/runs/a/last.pt: No space left on device",
        ),
        (
            OSError(errno.EROFS, "Read-only file system", "/ro/results.json"),
            "/ro/results.json: Read-only file system",
        ),
        (PermissionError(errno.EACCES, "Permission denied", "runs/x"), "runs/x: Permission denied"),
        (
            OptionError("modelnet40: split must be one of ('train', 'test'), got 'val'"),
            "modelnet40: split must be one of ('train', 'test'), got 'val'",
        ),
        (
            MissingDependencyError("the SVM probe needs scikit-learn: pip install scikit-learn"),
            "the SVM probe needs scikit-learn: pip install scikit-learn",
        ),
        (
            RunDirError("--out /runs/a already holds a run (last.pt): continue it with --resume"),
            "--out /runs/a already holds a run (last.pt): continue it with --resume",
        ),
        (
            CheckpointWriteError(
                "writing checkpoint /runs/a/last.pt failed: No space left on device"
            ),
            "writing checkpoint /runs/a/last.pt failed: No space left on device",
        ),
        (
            DistributedTimeoutError("process 1: another process stopped answering"),
            "process 1: another process stopped answering",
        ),
    ],
)
def test_refusals_are_one_line_exit_2(boom, capsys, error, expected):
    boom.append(error)
    assert main(["boom"]) == 2
    assert one_line_error(capsys, "boom") == f"map3d boom: error: {expected}"


def test_dataloader_worker_error_keeps_the_original_message(boom, capsys):
    # how torch re-raises a worker's exception: the type called with the traceback text
    boom.append(
        DatasetFormatError(
            "Caught DatasetFormatError in DataLoader worker process 0.\nOriginal Traceback (most "
            'recent call last):\n  File "x.py", line 1, in load\nmap3d.data.errors.'
            "DatasetFormatError: /d/a.txt (line 2): expected 7 numbers per line"
        )
    )
    assert main(["boom"]) == 2
    assert one_line_error(capsys, "boom").endswith(
        ": /d/a.txt (line 2): expected 7 numbers per line"
    )


@pytest.mark.parametrize("error", [RuntimeError("a bug"), KeyError("k"), OSError(errno.EIO, "x")])
def test_bugs_keep_their_traceback(boom, error):
    boom.append(error)
    with pytest.raises(type(error)):
        main(["boom"])


def test_debug_flag_and_env_show_the_traceback(boom, monkeypatch):
    boom.append(DatasetFormatError("/d/x.npy", "bad"))
    with pytest.raises(DatasetFormatError):
        main(["--debug", "boom"])
    with pytest.raises(DatasetFormatError):
        main(["boom", "--debug"])
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(DatasetFormatError):
        main(["boom"])


def test_ctrl_c_exits_130(boom, capsys):
    boom.append(KeyboardInterrupt())
    assert main(["boom"]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_real_commands_refuse_in_one_line(tmp_path, capsys):
    garbage = tmp_path / "last.pt"
    garbage.write_bytes(b"not a checkpoint")
    for argv in (
        ["eval", "--checkpoint", str(garbage)],
        ["export", str(garbage)],
        [
            "finetune",
            "--config",
            "configs/smoke/finetune.yaml",
            "--pretrained",
            str(tmp_path / "missing.pt"),
            "--out",
            str(tmp_path / "ft"),
        ],
        ["eval", "--checkpoint", str(tmp_path / "nowhere.pt")],
    ):
        assert main(argv) == 2, argv
        line = one_line_error(capsys, argv[0])
        assert str(tmp_path) in line and len(line) < 200 + len(str(tmp_path)), line


def finetune_smoke(out, *extra):
    """`map3d finetune` of the smoke config into `out`, with `extra` arguments."""
    return main(["finetune", "--config", "configs/smoke/finetune.yaml", "--out", str(out), *extra])


def finetune_from(weights, out, *extra):
    return finetune_smoke(out, "--pretrained", str(weights), *extra)


def test_unknown_dataset_option_is_one_line(tmp_path, capsys):
    assert finetune_smoke(tmp_path / "ft", "--set", "data.options.bogus=1") == 2
    line = one_line_error(capsys, "finetune")
    assert "dataset 'synthetic'" in line and "'bogus'" in line


def test_clouds_smaller_than_the_model_needs_is_one_line(tmp_path, capsys):
    assert finetune_smoke(tmp_path / "ft", "--set", "model.overrides.num_groups=256") == 2
    assert "fewer than the 256 needed" in one_line_error(capsys, "finetune")


def test_dataset_refusal_from_training_is_one_line(tmp_path, capsys):
    from map3d.data.layouts import make_modelnet_fewshot

    root = make_modelnet_fewshot(tmp_path / "data", way=5, shot=10, folds=1, num_points=256)
    (root / "5way10shot" / "0.pkl").write_bytes(b"\x80\x04truncated")
    assert (
        main(
            [
                "finetune",
                "--config",
                "configs/smoke/fewshot.yaml",
                "--data",
                str(root),
                "--out",
                str(tmp_path / "fs"),
                "--fold",
                "0",
            ]
        )
        == 2
    )
    assert "5way10shot/0.pkl" in one_line_error(capsys, "finetune")


def test_eval_prints_results_before_a_failed_write(pretrained, tmp_path, capsys, monkeypatch):
    from map3d import atomic

    target = tmp_path / "readonly" / "results.json"

    def read_only(file, *args, **kwargs):  # every file map3d keeps is written by atomic_write
        if Path(file).parent == target.parent:
            raise OSError(errno.EROFS, "Read-only file system", str(file))
        return open(file, *args, **kwargs)

    monkeypatch.setattr(atomic, "open", read_only, raising=False)
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(pretrained / "last.pt"), "--out", str(target)]) == 2
    printed = capsys.readouterr()
    assert "loss" in printed.out, printed.out
    assert "Traceback" not in printed.err
    line = printed.err.strip().splitlines()[-1]
    assert line.startswith("map3d eval: error: ") and str(target) in line
    assert "printed above" in line


def test_a_full_disk_at_a_checkpoint_is_one_line_naming_it(tmp_path, capsys, monkeypatch):
    from map3d import atomic

    def full_disk_at_last_pt(file, mode, newline=None):
        if Path(file).name.startswith(".last.pt."):
            return FullDisk(file, "wb")
        return open(file, mode, newline=newline)

    monkeypatch.setattr(atomic, "open", full_disk_at_last_pt, raising=False)
    out = tmp_path / "run"
    capsys.readouterr()
    assert (
        main(
            [
                "pretrain",
                "--config",
                "configs/smoke/pretrain.yaml",
                "--out",
                str(out),
                "--set",
                "train.max_steps=1",
            ]
        )
        == 2
    )
    line = one_line_error(capsys, "pretrain")
    assert line.endswith(f"{out / 'last.pt'} failed: No space left on device"), line
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "metrics.jsonl", "train.log"]


def write_encoder(run_dir, path, edit):
    """`edit` applied to the run's exported encoder, saved to `path`; (path, tensor count)."""
    from safetensors.torch import load_file, save_file

    weights = load_file(str(run_dir / "encoder.safetensors"))
    save_file(edit(weights), str(path))
    return path, len(weights)


def test_pretrained_keys_matching_nothing_are_refused(pretrained, tmp_path, capsys):
    path, count = write_encoder(
        pretrained,
        tmp_path / "renamed.safetensors",
        lambda w: {f"trunk.{k}": v for k, v in w.items()},
    )
    capsys.readouterr()
    assert finetune_from(path, tmp_path / "ft") == 2
    line = one_line_error(capsys, "finetune")
    assert str(path) in line and f"only 0 of the model's {count} tensors" in line
    assert f"{count} unexpected" in line and "--allow-partial" in line
    assert not (tmp_path / "ft" / "last.pt").exists()


def test_half_matching_pretrained_needs_allow_partial(pretrained, tmp_path, capsys):
    def half(weights):
        return {k: v for i, (k, v) in enumerate(sorted(weights.items())) if i % 2}

    path, count = write_encoder(pretrained, tmp_path / "half.safetensors", half)
    capsys.readouterr()
    assert finetune_from(path, tmp_path / "ft") == 2
    assert f"only {count // 2} of the model's {count} tensors" in one_line_error(capsys, "finetune")
    assert finetune_from(path, tmp_path / "ft", "--allow-partial") == 0
    log = (tmp_path / "ft" / "train.log").read_text()
    assert f"{count // 2} of {count} tensors under 'encoder.' matched" in log
    assert load_checkpoint(tmp_path / "ft" / "last.pt")["config"]["train"][
        "allow_partial_pretrained"
    ]


def test_integer_pretrained_weights_are_refused(pretrained, tmp_path, capsys):
    def to_int(weights):
        key = min(k for k, v in weights.items() if v.is_floating_point())
        return {**weights, key: weights[key].to(torch.int32)}

    path, _ = write_encoder(pretrained, tmp_path / "int.safetensors", to_int)
    capsys.readouterr()
    assert finetune_from(path, tmp_path / "ft") == 2
    line = one_line_error(capsys, "finetune")
    assert str(path) in line and "torch.int32" in line and "floating point" in line


def test_truncated_pretrained_files_are_named(pretrained, tmp_path, capsys):
    for name in ("encoder.safetensors", "last.pt"):
        path = tmp_path / name
        path.write_bytes((pretrained / name).read_bytes()[:300])
        capsys.readouterr()
        assert finetune_from(path, tmp_path / "ft") == 2
        assert str(path) in one_line_error(capsys, "finetune")


def test_eval_under_a_config_that_does_not_fit_the_weights(pretrained, tmp_path, capsys):
    capsys.readouterr()
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(pretrained / "last.pt"),
                "--set",
                "model.overrides.dim=96",
                "--out",
                str(tmp_path / "r.json"),
            ]
        )
        == 2
    )
    line = one_line_error(capsys, "eval")
    assert str(pretrained / "last.pt") in line and "do not fit the model" in line
    assert "size mismatch for encoder." in line
