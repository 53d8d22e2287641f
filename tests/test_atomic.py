"""`atomic_write`: all or nothing, no temporary file left on failure, stale temps cleaned."""

import errno
import io
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from map3d.atomic import atomic_write, remove_stale_temps
from map3d.cli import refusal
from map3d.engine.checkpoint import FORMAT_NAME, atomic_torch_save, load_checkpoint


def test_failure_keeps_the_old_file_and_removes_the_temp(tmp_path):
    target = tmp_path / "cache.pkl"
    target.write_bytes(b"old")
    with pytest.raises(OSError, match="No space left"), atomic_write(target) as f:
        f.write(b"partial")
        raise OSError(28, "No space left on device")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.pkl"]


def test_a_failed_write_names_the_target_not_the_temp(tmp_path):
    target = tmp_path / "last.pt"
    with pytest.raises(OSError) as info, atomic_write(target) as f:
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")  # what write(2) reports
    assert (info.value.errno, info.value.filename) == (errno.ENOSPC, str(target))
    assert refusal(info.value) == f"{target}: No space left on device"
    # a library that wraps the failed write in its own error (torch.save: a RuntimeError)
    with pytest.raises(OSError) as info, atomic_write(target) as f:
        try:
            f.write(b"partial")
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
        except OSError:
            raise RuntimeError("unexpected pos 704 vs 598") from None
    assert (info.value.errno, info.value.filename) == (errno.EDQUOT, str(target))
    assert os.listdir(tmp_path) == []


def test_other_errors_pass_through_unchanged(tmp_path):
    other = OSError(errno.ENOENT, "No such file or directory", str(tmp_path / "input.txt"))
    with pytest.raises(OSError) as info, atomic_write(tmp_path / "out.bin"):
        raise other
    assert info.value is other
    with pytest.raises(RuntimeError, match="a bug"), atomic_write(tmp_path / "out.bin"):
        raise RuntimeError("a bug")
    assert os.listdir(tmp_path) == []


def test_torch_save_on_a_full_disk_names_the_checkpoint(tmp_path, monkeypatch):
    from map3d import atomic

    class FullDisk(io.FileIO):
        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(
        atomic, "open", lambda file, mode, newline=None: FullDisk(file, "wb"), raising=False
    )
    with pytest.raises(OSError) as info:
        atomic_torch_save({"w": torch.ones(1000)}, tmp_path / "last.pt")
    assert refusal(info.value) == f"{tmp_path / 'last.pt'}: No space left on device"
    assert os.listdir(tmp_path) == []


def test_text_mode_and_parent_creation(tmp_path):
    with atomic_write(tmp_path / "a" / "b.csv", "w", newline="") as f:
        f.write("x,y\n")
    assert (tmp_path / "a" / "b.csv").read_text() == "x,y\n"
    assert os.listdir(tmp_path / "a") == ["b.csv"]


def _kill_mid_write(path) -> None:
    script = textwrap.dedent(f"""
        import os, signal
        from map3d.atomic import atomic_write
        with atomic_write({str(path)!r}) as f:
            f.write(b"half a checkpoint")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()


def test_temps_of_a_killed_writer_are_removed_by_the_next_save(tmp_path):
    _kill_mid_write(tmp_path / "last.pt")
    _kill_mid_write(tmp_path / "other.bin")
    assert len([p for p in tmp_path.iterdir() if p.name.startswith(".last.pt.")]) == 1
    atomic_torch_save({"format": FORMAT_NAME, "format_version": 1}, tmp_path / "last.pt")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names[1:] == ["last.pt"] and names[0].startswith(".other.bin.")
    assert load_checkpoint(tmp_path / "last.pt")["format"] == FORMAT_NAME
    assert [p.name for p in remove_stale_temps(tmp_path)] == [names[0]]
    assert os.listdir(tmp_path) == ["last.pt"]


def test_temps_of_a_live_writer_are_kept(tmp_path):
    with atomic_write(tmp_path / "x.bin") as f:
        f.write(b"in flight")
        assert remove_stale_temps(tmp_path) == []
        assert len(os.listdir(tmp_path)) == 1


def test_modelnet_cache_build_on_a_full_disk_leaves_no_temp(tmp_path, monkeypatch):
    from map3d.data import modelnet
    from map3d.data.layouts import make_modelnet40

    root = make_modelnet40(tmp_path / "mn", cache_points=None)
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"the first bytes of a cache")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(modelnet.pickle, "dump", full_disk)
    with pytest.raises(OSError, match="No space left"):
        modelnet.ModelNet40(root, "train", npoints=16, cache_dir=cache_dir)
    assert os.listdir(cache_dir) == []
