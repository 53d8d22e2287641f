"""Checkpoints: atomic writes survive a kill mid-write, weights_only loading, RNG, export."""

import os
import random
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from map3d.engine.checkpoint import (
    FORMAT_NAME,
    CheckpointError,
    atomic_torch_save,
    capture_rng,
    export_encoder,
    load_checkpoint,
    model_state_dict,
    restore_rng,
)


def _ckpt(value: float) -> dict:
    return {
        "format": FORMAT_NAME,
        "format_version": 1,
        "model": {"w": torch.full((4,), value)},
        "config": {"a": [1, 2], "b": "x"},
    }


def test_round_trip_weights_only(tmp_path):
    atomic_torch_save(_ckpt(1.0), tmp_path / "last.pt")
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert torch.equal(ckpt["model"]["w"], torch.ones(4)) and ckpt["config"]["a"] == [1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp files left


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_kill_during_write_keeps_previous_checkpoint(tmp_path):
    """A process SIGKILLed halfway through writing never leaves a corrupt last.pt."""
    script = textwrap.dedent(f"""
        import os, signal, torch
        from map3d.engine.checkpoint import atomic_torch_save, FORMAT_NAME
        path = {str(tmp_path / "last.pt")!r}
        atomic_torch_save({{"format": FORMAT_NAME, "format_version": 1,
                            "model": {{"w": torch.ones(4)}}}}, path)
        real_save = torch.save
        def dying_save(obj, f, *a, **k):
            f.write(b"PK partial bytes of a checkpoint")  # half-written file...
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)          # ...and the process dies
        torch.save = dying_save
        atomic_torch_save({{"format": FORMAT_NAME, "format_version": 1,
                            "model": {{"w": torch.zeros(10**6)}}}}, path)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert torch.equal(ckpt["model"]["w"], torch.ones(4))


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path):
    g = torch.Generator().manual_seed(5)
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    atomic_torch_save(
        {"format": FORMAT_NAME, "format_version": 1, "rng": capture_rng({"aug": g})},
        tmp_path / "r.pt",
    )
    expected = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(3, generator=g))
    torch.manual_seed(9), np.random.seed(9), random.seed(9), g.manual_seed(9)
    restore_rng(load_checkpoint(tmp_path / "r.pt")["rng"], {"aug": g})
    got = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(3, generator=g))
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
    assert got[2] == expected[2] and torch.equal(got[3], expected[3])


def test_export_encoder_safetensors(tmp_path):
    from safetensors import safe_open

    state = {"encoder.a.weight": torch.randn(2, 2), "head.weight": torch.randn(3)}
    assert export_encoder(state, tmp_path / "enc.safetensors", metadata={"model_name": "m"}) == 1
    with safe_open(str(tmp_path / "enc.safetensors"), "pt") as f:
        assert list(f.keys()) == ["a.weight"] and f.metadata()["model_name"] == '"m"'
    loaded = model_state_dict(tmp_path / "enc.safetensors")
    assert torch.equal(loaded["encoder.a.weight"], state["encoder.a.weight"])
    with pytest.raises(ValueError, match="no weights under prefix"):
        export_encoder(state, tmp_path / "x.safetensors", prefix="decoder.")
    assert not os.path.exists(tmp_path / "x.safetensors")


def test_export_encoder_creates_its_folder(tmp_path):
    state = {"encoder.a.weight": torch.randn(2, 2)}
    target = tmp_path / "new" / "deeper" / "enc.safetensors"
    assert export_encoder(state, target) == 1
    assert torch.equal(model_state_dict(target)["encoder.a.weight"], state["encoder.a.weight"])


def test_checkpoint_modality_is_stored_or_inferred_from_the_model():
    from map3d.engine.checkpoint import checkpoint_modality

    assert checkpoint_modality({"modality": "images", "model_name": "hybridmt3d_s"}) == "images"
    # written before the field existed: from the preset, else from the experiment config
    assert checkpoint_modality({"model_name": "map_nano_patch4_16"}) == "images"
    assert checkpoint_modality({"config": {"model": {"name": "hybridmt3d_tiny"}}}) == "points"


def test_finetune_command_per_preset():
    from map3d.engine.hints import finetune_command

    assert finetune_command("p.pt", "hybridmt3d_tiny") == "map3d finetune --pretrained p.pt"
    assert finetune_command("p.pt", "map_nano_patch4_16") == (
        "map3d finetune --config configs/finetune/image_tiny_digits.yaml --pretrained p.pt"
    )
    assert "--set model.name=mamba3d_s" in finetune_command("p.pt", "mamba3d_s")
    assert "configs/finetune/modelnet40.yaml --data" in finetune_command("p.pt", "hybridmt3d_s")
    assert "no finetuning config ships" in finetune_command("p.pt", "map_tiny_patch16_224")
    # a widened encoder: its shape overrides are repeated, the rest is the recipe's business
    widened = finetune_command(
        "p.pt",
        "map_nano_patch4_16",
        {"dim": 64, "num_heads": 4, "image_size": 16, "mask_ratio": 0.5},
    )
    assert widened.endswith(
        "--set model.overrides.dim=64 --set model.overrides.num_heads=4 --pretrained p.pt"
    )


def test_background_writer_copies_the_state_and_does_not_block(tmp_path, monkeypatch):
    import threading

    from map3d.engine import checkpoint

    release, real_save = threading.Event(), checkpoint.atomic_torch_save

    def slow_save(obj, path):
        release.wait(10)
        real_save(obj, path)

    monkeypatch.setattr(checkpoint, "atomic_torch_save", slow_save)
    writer = checkpoint.CheckpointWriter()
    state = _ckpt(1.0)
    writer.submit(state, [tmp_path / "last.pt", tmp_path / "best.pt"])
    state["model"]["w"].fill_(7.0)  # training goes on while the disk is busy
    assert not (tmp_path / "last.pt").exists()
    release.set()
    writer.wait()
    for name in ("last.pt", "best.pt"):
        assert torch.equal(load_checkpoint(tmp_path / name)["model"]["w"], torch.ones(4))


def test_staged_tensors_are_written_with_the_next_submitted_state(tmp_path):
    from map3d.engine import checkpoint

    writer = checkpoint.CheckpointWriter()
    state = _ckpt(1.0)
    weights = {"model": state.pop("model")}
    writer.stage(weights)
    weights["model"]["w"].fill_(7.0)  # staged: later changes do not reach the checkpoint
    state["config"]["b"] = "y"  # the rest is taken at submit
    writer.submit(state, [tmp_path / "last.pt"])
    writer.wait()
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert torch.equal(ckpt["model"]["w"], torch.ones(4)) and ckpt["config"]["b"] == "y"
    writer.submit(_ckpt(2.0), [tmp_path / "last.pt"])  # nothing staged: the state as given
    writer.wait()
    assert torch.equal(load_checkpoint(tmp_path / "last.pt")["model"]["w"], torch.full((4,), 2.0))


@pytest.mark.gpu
def test_host_snapshot_in_parts_waits_for_every_part():
    from map3d.engine.checkpoint import HostSnapshot

    snapshot = HostSnapshot()
    bulk = {"w": torch.randn(1000, 7, device="cuda")}
    rest = {"step": torch.tensor(5.0, device="cuda")}
    expected = bulk["w"].cpu()
    first = snapshot(bulk)
    second = snapshot(rest, more=True)  # adds to the snapshot: first's buffer is kept
    bulk["w"].mul_(2)
    snapshot.wait_copied()
    assert torch.equal(first["w"], expected) and second["step"].item() == 5.0
    assert first["w"].data_ptr() != second["step"].data_ptr()


@pytest.mark.gpu
def test_host_snapshot_of_gpu_tensors_reuses_its_pinned_buffers():
    from map3d.engine.checkpoint import HostSnapshot

    snapshot = HostSnapshot()
    state = {
        "model": {"w": torch.randn(1000, 7, device="cuda"), "cpu": torch.ones(3)},
        "optimizer": {"step": torch.tensor(5.0, device="cuda"), "lr": [1e-3, 2]},
        "rng": (torch.randn(4, device="cuda").to(torch.bfloat16), "name"),
    }
    snapshot.reserve(state)
    reserved = snapshot._buffers[0].data_ptr()
    expected = state["model"]["w"].cpu()
    first = snapshot(state)
    state["model"]["w"].mul_(2)  # training goes on after the snapshot, without waiting
    snapshot.wait_copied()
    assert first["model"]["w"].data_ptr() == reserved  # the buffer pinned ahead
    assert torch.equal(first["model"]["w"], expected) and first["model"]["w"].is_pinned()
    assert torch.equal(first["model"]["cpu"], torch.ones(3))
    assert first["model"]["cpu"] is not state["model"]["cpu"]
    assert first["optimizer"]["step"].item() == 5.0 and first["optimizer"]["lr"] == [1e-3, 2]
    assert first["rng"][0].dtype == torch.bfloat16 and first["rng"][1] == "name"
    second = snapshot(state)
    snapshot.wait_copied()
    assert second["model"]["w"].data_ptr() == first["model"]["w"].data_ptr()  # reused
    assert torch.equal(second["model"]["w"], state["model"]["w"].cpu())
    state["model"]["w"] = torch.randn(5, device="cuda")  # another shape: a new buffer
    third = snapshot(state)
    snapshot.wait_copied()
    assert torch.equal(third["model"]["w"], state["model"]["w"].cpu())
    assert third["optimizer"]["step"].data_ptr() == first["optimizer"]["step"].data_ptr()


def test_memory_reserved_ahead_or_not_the_checkpoint_is_written(tmp_path, monkeypatch, caplog):
    from map3d.engine import checkpoint

    writer = checkpoint.CheckpointWriter()
    writer.reserve(_ckpt(1.0))
    writer.submit(_ckpt(2.0), [tmp_path / "last.pt"])
    writer.wait()
    assert torch.equal(load_checkpoint(tmp_path / "last.pt")["model"]["w"], torch.full((4,), 2.0))

    def no_pinned_memory(self, state):
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr(checkpoint.HostSnapshot, "reserve", no_pinned_memory)
    writer.reserve(_ckpt(1.0))  # only ahead of time: the checkpoint itself still goes on
    writer.submit(_ckpt(3.0), [tmp_path / "last.pt"])
    writer.wait()
    assert torch.equal(load_checkpoint(tmp_path / "last.pt")["model"]["w"], torch.full((4,), 3.0))
    assert "could not pin host memory for checkpoints ahead of time" in caplog.text


def test_background_writer_error_surfaces_in_the_caller(tmp_path, monkeypatch):
    from map3d.engine import checkpoint

    def full_disk(obj, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "atomic_torch_save", full_disk)
    writer = checkpoint.CheckpointWriter()
    writer.submit(_ckpt(1.0), [tmp_path / "last.pt"])
    with pytest.raises(checkpoint.CheckpointWriteError, match="last.pt.*No space left"):
        writer.wait()
    writer.wait()  # reported once


def test_background_writer_bug_keeps_its_type(tmp_path, monkeypatch):
    from map3d.engine import checkpoint
    from map3d.errors import UserError

    def bug(obj, path):
        raise TypeError("cannot pickle 'generator' object")

    monkeypatch.setattr(checkpoint, "atomic_torch_save", bug)
    writer = checkpoint.CheckpointWriter()
    writer.submit(_ckpt(1.0), [tmp_path / "last.pt"])
    with pytest.raises(TypeError, match="cannot pickle") as info:
        writer.wait()
    assert not isinstance(info.value, UserError)  # a bug: map3d shows its traceback
    writer.wait()  # reported once
