"""Self-describing checkpoints, written atomically, loaded with `weights_only=True`.

A checkpoint is a dict of tensors and plain Python values only (dicts, lists, strings, numbers):
```
format_version, map3d_version, task, modality ("points" | "images"), model_name,
model_config (dict), config (experiment dict),
data_info (the training set's class_names / category_names / category_parts, if any),
model (state dict), optimizer, scheduler, scaler (state dicts or None),
epoch (epochs completed), batch_in_epoch (batches done in `epoch` when saved mid-epoch),
step (optimizer steps), best_metric, best_metric_name ("test_oa", "train_loss", ...),
best_metric_kind ("test" / "train" / None), meters (the running means of the log window and of
the epoch, so that a resumed epoch's record equals an uninterrupted one), rng (all RNG states),
time
```
Writes go through `map3d.atomic.atomic_write` (temporary file in the same directory, fsync'ed,
`os.replace`d): a crash at any point leaves the previous file intact, and a writer killed
mid-write leaves a temporary file that the next save removes. `model_from_checkpoint` rebuilds
the model a checkpoint holds. The encoder can be exported as
safetensors (`export_encoder`). Release checkpoints of PointMAP, Mamba3D and Point-MAE read as
map3d checkpoints (`release_checkpoint`).
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from map3d.atomic import atomic_write, remove_stale_temps
from map3d.engine.config import ConfigError, check_config_data
from map3d.engine.setup import map_tensors
from map3d.errors import USER_ERRNOS, UserError, torch_load_reason

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
FORMAT_NAME = "map3d-checkpoint"


class CheckpointError(UserError, ValueError):
    """A file that is not a readable map3d checkpoint; the message names the file and why."""


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """`torch.save` to `path` so that readers see either the old file or the complete new one;
    temporary files left by an earlier writer of `path` that was killed are removed first."""
    path = Path(path)
    remove_stale_temps(path.parent, path.name)
    with atomic_write(path) as f:
        torch.save(obj, f)


class HostSnapshot:
    """Copies of a (nested) state whose tensors are detached host copies: training may go on
    changing the originals while the copy is written.

    GPU tensors go into pinned host buffers kept from one snapshot to the next (asynchronous
    copies at full bus speed, no allocation after the first). The copies are only enqueued:
    the device's stream orders them before any later change of the originals, so the caller
    does not wait for them, and `wait_copied` (any thread) blocks until they have landed. A
    snapshot's buffers are reused by the next one, so it must be written by then; a call with
    `more=True` adds to the last snapshot instead (a state copied in parts). `reserve`
    allocates the buffers ahead (pinning host memory is slow: ~1.5 ms per MB), e.g. in a
    background thread. CPU tensors are cloned.
    """

    def __init__(self):
        self._buffers: list[torch.Tensor] = []
        self._used = 0
        self._copied: list[tuple[torch.device, torch.cuda.Event]] = []

    def __call__(self, state: Any, more: bool = False) -> Any:
        devices: set[torch.device] = set()
        if not more:
            self._used, self._copied = 0, []

        def copy(t: torch.Tensor) -> torch.Tensor:
            t = t.detach()
            if t.device.type != "cuda":
                return t.to("cpu", copy=True)
            devices.add(t.device)
            return self._pinned_like(t).copy_(t, non_blocking=True)

        snapshot = map_tensors(state, copy)
        self._copied += [(device, _recorded_event(device)) for device in devices]
        return snapshot

    def wait_copied(self) -> None:
        """Block until the GPU copies of the last snapshot have landed in its host buffers."""
        for device, event in self._copied:
            with torch.cuda.device(device):
                event.synchronize()

    def reserve(self, state: Any) -> None:
        """Allocate the buffers that a snapshot of `state` (same structure and shapes) uses."""
        self._used = 0

        def pin(t: torch.Tensor) -> None:
            if t.device.type == "cuda":
                with torch.cuda.device(t.device):  # pin from this device's context
                    self._pinned_like(t)

        map_tensors(state, pin)

    def _pinned_like(self, t: torch.Tensor) -> torch.Tensor:
        """The next buffer in traversal order, (re)allocated when its shape or dtype differs."""
        i, self._used = self._used, self._used + 1
        if i < len(self._buffers) and (
            self._buffers[i].shape == t.shape and self._buffers[i].dtype == t.dtype
        ):
            return self._buffers[i]
        buffer = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
        if i < len(self._buffers):
            self._buffers[i] = buffer
        else:
            self._buffers.append(buffer)
        return buffer


def _recorded_event(device: torch.device) -> torch.cuda.Event:
    """An event recorded on `device`'s current stream (completes after the work queued so far)."""
    with torch.cuda.device(device):
        event = torch.cuda.Event()
        event.record()
    return event


class CheckpointWriteError(UserError, RuntimeError):
    """The disk refused a checkpoint written in the background (full, over quota, read-only,
    no permission); raised in the training thread, naming the checkpoint, as one line."""


class CheckpointWriter:
    """Writes checkpoints in a background thread so that training does not wait for the disk.

    `submit` enqueues a host copy of the state (`HostSnapshot`: the training thread waits for
    nothing but the previous write) and writes it from the background thread, once its copies
    have landed, atomically and fsync'ed, to each path in turn. At most one write is in flight.
    `stage` copies the bulk of a state (weights, optimizer state) ahead of its `submit`, while
    the device is still busy with earlier work: the host's enqueueing of ~1,000 copies then
    overlaps the device's work instead of following a read that drained it. `reserve` pins the
    snapshot's host memory ahead, in the background. `wait` (call it before
    exiting) blocks until the write is done and re-raises its error, if any: a refusal of the
    disk as `CheckpointWriteError`, any other error (a bug) as it is, with its traceback.
    """

    def __init__(self):
        self._thread: threading.Thread | None = None
        self._error: tuple[Path, BaseException] | None = None
        self._snapshot = HostSnapshot()
        self._staged: dict | None = None

    def reserve(self, state: dict) -> None:
        """Allocate the host buffers for snapshots of `state` in the background, so that the
        first checkpoint does not wait for it (call it once the state has its final shapes)."""
        self.wait()
        self._start(self._reserve, state)

    def stage(self, entries: dict) -> None:
        """Enqueue the host copies of `entries` (top-level checkpoint keys) now; the next
        `submit` writes them with its state. They must not change until then."""
        self.wait()  # the previous write has read the snapshot's buffers
        self._staged = self._snapshot(entries)

    @property
    def staged(self) -> bool:
        """Whether entries were staged since the last submit."""
        return self._staged is not None

    def submit(self, state: dict, paths: list[Path]) -> None:
        """Write `state`, and the entries staged since the last submit, to each of `paths`."""
        staged, self._staged = self._staged, None
        if staged is None:
            self.wait()  # the previous write has read the snapshot's buffers
        snapshot = {**self._snapshot(state, more=staged is not None), **(staged or {})}
        self._start(self._write, snapshot, list(paths))

    def _start(self, target: Callable, *args: Any) -> None:
        self._thread = threading.Thread(target=target, args=args, name="map3d-checkpoint-writer")
        self._thread.start()

    def _reserve(self, state: dict) -> None:
        try:
            self._snapshot.reserve(state)
        except Exception as err:  # noqa: BLE001 (only ahead of time: the snapshot pins again)
            log.warning("could not pin host memory for checkpoints ahead of time: %s", err)

    def _write(self, snapshot: dict, paths: list[Path]) -> None:
        for path in paths:
            try:
                self._snapshot.wait_copied()  # at once after the first path
                atomic_torch_save(snapshot, path)
            except Exception as err:  # noqa: BLE001 (re-raised in the training thread by wait)
                self._error = (path, err)
                return

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            (path, err), self._error = self._error, None
            if isinstance(err, OSError) and err.errno in USER_ERRNOS:
                raise CheckpointWriteError(
                    f"writing checkpoint {path} failed: {err.strerror or err}"
                ) from err
            raise err


def run_checkpoint(path: str | Path) -> Path:
    """`path`, or for a run directory its best.pt (last.pt when it has none): the checkpoint
    `map3d eval` and `map3d predict` use."""
    path = Path(path)
    if path.is_dir():
        path = path / ("best.pt" if (path / "best.pt").exists() else "last.pt")
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a map3d checkpoint (weights_only=True); check its format version, and that its
    `config` and `model_config` are small plain mappings (`check_config_data`) before use."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, foreign pickle, ...
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({torch_load_reason(err)})"
        ) from err
    if isinstance(ckpt, dict) and ckpt.get("format") != FORMAT_NAME:
        release = release_checkpoint(ckpt, path)
        if release is not None:
            return release
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT_NAME:
        raise CheckpointError(
            f"{path}: not a map3d checkpoint (no format '{FORMAT_NAME}') nor a PointMAP, "
            "Mamba3D or Point-MAE release checkpoint"
        )
    for key in ("config", "model_config"):
        if ckpt.get(key) is None:
            continue
        if not isinstance(ckpt[key], dict):
            raise CheckpointError(f"{path}: '{key}' is a {type(ckpt[key]).__name__}, not a mapping")
        try:
            check_config_data(ckpt[key], f"{path} '{key}'")
        except ConfigError as err:
            raise CheckpointError(str(err)) from None
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format version {ckpt['format_version']} is newer than this map3d "
            f"understands ({FORMAT_VERSION}); upgrade map3d"
        )
    return ckpt


def checkpoint_modality(ckpt: dict) -> str:
    """ "points" or "images": the checkpoint's `modality`, or for checkpoints written before it
    was stored, the modality of its model preset (`model_name`, else `config.model.name`)."""
    if ckpt.get("modality"):
        return ckpt["modality"]
    from map3d.models.registry import model_modality

    name = ckpt.get("model_name") or ckpt["config"]["model"]["name"]
    return model_modality(name)


def checkpoint_model_overrides(ckpt: dict) -> dict:
    """The model overrides of the experiment config stored in a checkpoint ({} without one,
    e.g. for release checkpoints)."""
    return ((ckpt.get("config") or {}).get("model") or {}).get("overrides") or {}


def weights_origin(path: str | Path) -> tuple[str | None, str | None, dict]:
    """(model preset name, modality, model overrides) of the weights in a map3d checkpoint or
    an exported `.safetensors` encoder (from its metadata); None / {} for what the file does
    not say."""
    path = Path(path)
    if path.suffix != ".safetensors":
        ckpt = load_checkpoint(path)
        return ckpt.get("model_name"), checkpoint_modality(ckpt), checkpoint_model_overrides(ckpt)
    from safetensors import safe_open

    from map3d.models.registry import model_modality

    if not path.is_file():
        raise FileNotFoundError(f"weights not found: {path}")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except Exception as err:  # truncated file, bad header (SafetensorError), ...
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
    name = json.loads(meta["model_name"]) if "model_name" in meta else None
    overrides = json.loads(meta.get("model_overrides", "{}"))
    if "modality" in meta:
        return name, json.loads(meta["modality"]), overrides
    try:
        return name, None if name is None else model_modality(name), overrides
    except ValueError:  # a preset this map3d does not know
        return name, None, overrides


def load_model_weights(model: torch.nn.Module, ckpt: dict, path: str | Path) -> None:
    """Load a checkpoint's `model` weights into `model` strictly; weights that do not fit (the
    model was built from another config) raise CheckpointError naming `path` and the first
    differing key."""
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        details = [line.strip() for line in str(err).splitlines()[1:] if line.strip()]
        raise CheckpointError(
            f"{path}: its weights do not fit the model built from the config "
            f"({details[0] if details else err}); was the model config changed (--config, "
            "--set model.*)?"
        ) from err


def model_from_checkpoint(
    ckpt: dict, path: str | Path, *, config: Any = None, **overrides
) -> torch.nn.Module:
    """The model a checkpoint holds, rebuilt and with its weights loaded strictly (on the CPU,
    in eval mode): the one way map3d rebuilds a model from a checkpoint (`map3d eval`,
    `predict`, `viz`, `map3d.load_model`).

    The model is the checkpoint's preset (`model_name`) for its `model_task`, built from
    `config` (a typed model config, e.g. the experiment's that `map3d eval` resolves) or else
    from the checkpoint's `model_config` with `overrides` (model config fields that leave the
    weights' shapes alone, e.g. num_groups). Weights that do not fit raise CheckpointError
    naming `path` (`load_model_weights`).
    """
    from map3d.models.registry import build_config, model_from_config

    name, task = ckpt["model_name"], ckpt.get("model_task", ckpt.get("task"))
    if config is None:
        config = build_config(name, task, **{**(ckpt.get("model_config") or {}), **overrides})
    elif overrides:
        raise TypeError("model_from_checkpoint: pass config or overrides, not both")
    model = model_from_config(name, task, config)
    load_model_weights(model, ckpt, path)
    return model.eval()


def _release_overrides(state: dict[str, torch.Tensor], pattern: str) -> dict[str, Any]:
    """Sizes a converted release state dict fixes: pattern, width, SSM state, decoder, head."""
    overrides: dict[str, Any] = {"pattern": pattern}
    norm = state.get("encoder.backbone.norm.weight")
    if norm is not None:
        overrides["dim"] = norm.shape[0]
    a_log = next((v for k, v in state.items() if k.endswith("mixer.A_log")), None)
    if a_log is not None:
        overrides["d_state"] = a_log.shape[1]
    if "head.8.weight" in state:
        overrides["num_classes"] = state["head.8.weight"].shape[0]
    if "decoder.mask_token" in state:
        depth = {k.split(".")[3] for k in state if k.startswith("decoder.blocks.blocks.")}
        overrides["decoder_depth"] = len(depth)
        overrides["group_size"] = state["head.weight"].shape[0] // 3
    return overrides


def release_checkpoint(raw: dict, path: str | Path = "") -> dict | None:
    """A PointMAP / Mamba3D / Point-MAE release checkpoint (`{'base_model': state_dict}` and
    variants) as a map3d checkpoint dict, or None when `raw` is not one.

    The release is detected by its keys, the weights converted to map3d names, and the model
    described by `model_name` (the release's preset) and `model_config` (overrides: `compat`
    plus the sizes the weights fix); `release` names the release, `config` is None.
    """
    from map3d import __version__
    from map3d.models import RELEASES, convert_release_state_dict, detect_release, release_pattern

    name = detect_release(raw)
    if name is None:
        return None
    release = RELEASES[name]
    pattern = release_pattern(raw)
    state, _ = convert_release_state_dict(raw, pattern)
    task = "classify" if "head.8.weight" in state else "pretrain"
    log.info(
        "%s: found a %s release checkpoint (%s weights, blocks %s); building it with compat=%s",
        path,
        release.title,
        task,
        pattern,
        name,
    )
    return {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "map3d_version": __version__,
        "release": name, "task": task, "model_task": task, "model_name": release.preset,
        "model_config": {"compat": name, **_release_overrides(state, pattern)},
        "config": None, "model": state, "optimizer": None, "scheduler": None, "scaler": None,
        "epoch": 0, "batch_in_epoch": 0, "step": 0, "best_metric": None,
        "best_metric_name": None,
    }  # fmt: skip


_ARCHITECTURE = ("pattern", "dim", "d_state")


def adopt_release(cfg, ckpt: dict, *, model_task: str, whole_model: bool = False):
    """`cfg` (an ExperimentConfig), changed so that its model is the one a release checkpoint
    needs; `cfg` itself when `ckpt` is not a release checkpoint.

    Sets `model.overrides.compat` (a different compat the config asks for is kept, with a
    warning) and, when the config's preset has other blocks or widths than the checkpoint,
    switches to the release's preset. `whole_model` also takes the head and decoder sizes (to
    load every tensor, e.g. for evaluation).
    """
    import copy

    from map3d.models import RELEASES, build_config

    name = ckpt.get("release")
    if name is None:
        return cfg
    cfg = copy.deepcopy(cfg)
    overrides = cfg.model.overrides
    wanted = overrides.get("compat", cfg.compat)
    if wanted not in (None, name):
        log.warning(
            "the config asks for compat=%s, the checkpoint is a %s release: keeping compat=%s",
            wanted,
            name,
            wanted,
        )
    else:
        overrides["compat"] = name
    sizes = ckpt["model_config"]
    ours = build_config(cfg.model.name, model_task, **overrides)
    backbone = ours.encoder.backbone
    if any(getattr(backbone, k) != sizes[k] for k in _ARCHITECTURE if k in sizes):
        preset = RELEASES[name].preset
        log.warning(
            "model %s (blocks %s, width %d) does not match the %s checkpoint (blocks %s): "
            "using preset %s",
            cfg.model.name,
            backbone.pattern,
            backbone.dim,
            name,
            sizes["pattern"],
            preset,
        )
        cfg.model.name = preset
        overrides.update({k: sizes[k] for k in _ARCHITECTURE if k in sizes})
    if whole_model:
        overrides.update({k: v for k, v in sizes.items() if k != "compat"})
    return cfg


def model_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The model weights of a map3d checkpoint or of an exported `.safetensors` encoder.

    Exported encoders store keys without their prefix; they come back under `encoder.`.
    Release checkpoints come back converted (`release_checkpoint`).
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        if not path.is_file():
            raise FileNotFoundError(f"weights not found: {path}")
        try:
            weights = load_file(str(path))
        except Exception as err:  # truncated file, bad header (SafetensorError), ...
            raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
        return {f"encoder.{k}": v for k, v in weights.items()}
    return load_checkpoint(path)["model"]


# ----------------------------------------------------------------------------- RNG states


def capture_rng(generators: dict[str, torch.Generator]) -> dict:
    """All RNG states as tensors/lists (weights_only-loadable): torch, CUDA, numpy, python, named generators."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "generators": {name: g.get_state() for name, g in generators.items()},
    }


def restore_rng(state: dict, generators: dict[str, torch.Generator]) -> None:
    """Inverse of `capture_rng`; named generators missing from `state` are left as they are."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    nps = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            nps["keys"].numpy().astype(np.uint32),
            nps["pos"],
            nps["has_gauss"],
            nps["cached_gaussian"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    for name, g in generators.items():
        if name in state["generators"]:
            g.set_state(state["generators"][name])


# ----------------------------------------------------------------------------- export


def export_encoder(
    state_dict: dict[str, torch.Tensor],
    path: str | Path,
    *,
    prefix: str = "encoder.",
    metadata: dict[str, Any] | None = None,
) -> int:
    """Write the `prefix`-ed weights (prefix stripped) as safetensors; returns the tensor count.

    The folder of `path` is created if needed.

    `metadata` values are stored JSON-encoded in the safetensors header.
    """
    from safetensors.torch import save

    tensors = {
        k[len(prefix) :]: v.detach().cpu().contiguous()
        for k, v in state_dict.items()
        if k.startswith(prefix)
    }
    if not tensors:
        raise ValueError(f"no weights under prefix {prefix!r} to export to {path}")
    meta = {"format": "map3d-encoder", "prefix": prefix}
    meta.update({k: json.dumps(v) for k, v in (metadata or {}).items()})
    with atomic_write(path) as f:
        f.write(save(tensors, metadata=meta))
    return len(tensors)
