"""Typed experiment configuration: dataclasses filled from YAML with strict keys.

An experiment is `model + data + optim + schedule + train + eval + output`. YAML only fills the
dataclasses below; an unknown key is an error that names its full path (`optim.lrr`), a value of
the wrong type names the key and the expected type. `--set a.b=value` overrides parse the value
as YAML and check it the same way. A YAML file may start from another one with
`base: relative/or/absolute.yaml` (deep-merged, the including file wins).

`model.overrides` is resolved into the preset's typed task config (`PointPretrainConfig`,
`PointClassifierConfig`, ...) whenever an ExperimentConfig is made (from YAML, `--set`, a
checkpoint or Python): each value is checked by the same `map3d.typed.coerce` against that
config's field, then by the config's own checks, so a bad `num_regions` is refused at load,
before any dataset is built, as one line naming `model.overrides.num_regions` and its value.
Only the sizes a task takes from its dataset (num_classes, ...) are filled in later
(`ExperimentConfig.model_config(filled=...)`). `data.options` is free-form: it is forwarded as
keyword arguments to `map3d.data.build_dataset`, which validates it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from map3d.atomic import atomic_write
from map3d.errors import ConfigError
from map3d.typed import fill


@dataclass
class ModelConfig:
    """Which preset to build, and the fields of its typed task config that differ from the
    preset's: `overrides` are what `create_model(name, task=..., **overrides)` takes (a field by
    name, a nested one by its bare name or a dict). They are resolved into that typed config,
    and so checked, when the experiment config is made (`ExperimentConfig.model_config`)."""

    name: str = "hybridmt3d_tiny"
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    """Dataset, batch-time sampling and augmentation.

    `batch_size` is the GLOBAL batch (split evenly over processes, then over `train.accum_steps`
    micro-batches), so a recipe means the same thing on 1 or 8 GPUs. Batch-time pipeline
    (docs/protocols.md#batch-time-point-pipeline): FPS to `point_all` points (None: 1200 for
    1024, 2400 for 2048, 4800 for 4096, else `npoints`; capped at the cloud size), one random
    `npoints` subset shared by the batch, then the `augment` transforms, all on the device.
    Evaluation uses FPS to `npoints` without augmentation; votes use `vote_augment` on fresh
    subsets of the FPS `point_all` set.
    `options` go to `build_dataset` for every split, `test_options` on top for the test split.
    """

    name: str = "synthetic"
    root: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    test_options: dict[str, Any] = field(default_factory=dict)
    train_split: str = "train"
    test_split: str = "test"
    npoints: int = 1024
    point_all: int | None = None
    batch_size: int = 32
    eval_batch_size: int | None = None
    num_workers: int = 0
    augment: list[str] = field(default_factory=list)
    vote_augment: list[str] = field(default_factory=list)


@dataclass
class OptimConfig:
    """AdamW; weight decay is not applied to biases, norms, tokens and position embeddings.

    weight_decay_groups: None / "map3d" (no decay on 1-D tensors, cls/mask tokens, cls position,
    SSM A_log and D) or "release" (the releases' `add_weight_decay`: no decay on 1-D tensors,
    `.bias` and names containing "token"; so A_log, cls_pos and LNP's affine are decayed).

    `layer_decay` (layer-wise lr decay, MAE / BEiT): encoder block i runs at
    lr * layer_decay ** (depth - i), the embeddings (patch, position, cls) at
    lr * layer_decay ** (depth + 1), the final norm and heads at lr (depth = number of encoder
    blocks). 1.0 = off, the default and what the Point-MAE / Mamba3D / MAP-3D releases use;
    MAE and BEiT finetune ViTs with 0.65-0.75, a choice for pretrained encoders.
    """

    lr: float = 1e-3
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    grad_clip: float | None = None
    weight_decay_groups: str | None = None
    layer_decay: float = 1.0


@dataclass
class ScheduleConfig:
    """Per-step cosine decay to `min_lr` after a linear warm-up of `warmup_epochs` from ~0.

    interval: None / "step" (the above, updated every optimizer step) or "epoch" (the releases'
    timm CosineLRScheduler stepped after each epoch: warm-up from `min_lr`, constant within an
    epoch, epoch e trains at the value of epoch max(e-1, 0)).
    """

    epochs: int = 300
    warmup_epochs: float = 10
    min_lr: float = 1e-6
    interval: str | None = None


@dataclass
class TrainConfig:
    """Task, seed, device, precision, logging and checkpoint cadence.

    precision: `auto` (bf16 autocast on a GPU that supports it, else fp32), `fp32`, `bf16`,
    `fp16` (with a GradScaler); autocast is only used on CUDA. `max_steps` stops this invocation
    after that many optimizer steps (with a checkpoint) while the schedule still spans all
    epochs: time-limited jobs continue with `--resume`.
    `pretrained` (a .pt checkpoint or an exported .safetensors encoder) must provide every
    tensor of the model under `pretrained_prefix`; `allow_partial_pretrained` accepts fewer
    (the rest keeps its fresh initialisation; the counts are logged).
    `eval_every_epochs`: test-split evaluation cadence (0 = never; best.pt then follows the
    epoch's training mean of the task's metric when finetuning, and pretraining keeps none).
    `accum_steps` splits each process's share of the batch into micro-batches (gradient
    accumulation). `dist_timeout_s`: how long a collective operation of a multi-process run
    waits for the other processes before the run ends with an error (never a hang).
    `step_mode`: `auto` (default: the whole step replayed from a CUDA graph where that works,
    else eager, and the log says why), `eager` or `cuda_graph` (see map3d.engine.step).
    `compile`: `auto` (default: compile the backbone blocks and the point patch embedding with
    torch.compile when training on CUDA, unless the environment sets MAP3D_COMPILE=0), `true` /
    `on` or `false` / `off` (`map3d.models.compile`; the first steps then take a minute longer
    to compile; results differ from eager blocks by float rounding only, so a run may resume
    with another value).
    `label_smoothing`: of the cross-entropy of classification and part segmentation, as
    `F.cross_entropy(label_smoothing=)` (0 <= value < 1). 0.0 is the default and what the
    releases do: Point-MAE uses a plain cross-entropy, Mamba3D (and so MAP-3D)
    `CrossEntropyLoss(label_smoothing=label_smooth)` with `label_smooth: 0.0` in every finetuning
    config (the MAP 2D release finetunes ImageNet with 0.1, inside mixup/cutmix).
    """

    task: str = "pretrain"
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    accum_steps: int = 1
    log_every_steps: int = 10
    checkpoint_every_steps: int = 500
    eval_every_epochs: int = 1
    max_steps: int | None = None
    pretrained: str | None = None
    allow_partial_pretrained: bool = False
    pretrained_prefix: str = "encoder."
    dist_timeout_s: float = 600.0
    step_mode: str = "auto"
    compile: bool | str = "auto"
    label_smoothing: float = 0.0


@dataclass
class EvalConfig:
    """Evaluation protocol: `votes` passes with `data.vote_augment` (logits averaged).

    `fewshot_folds` lists the folds `--fold all` runs (mean ± std of the best test accuracy over
    folds, docs/protocols.md#few-shot-modelnet40); `svm` adds a linear-SVM probe on frozen
    encoder features (docs/protocols.md#linear-svm-probe).
    `vote_permute`: None / False takes the FPS pool as is when it has exactly `npoints` points
    (ScanObjectNN); True permutes it for every vote, as the releases do (FPS then starts from a
    different point).
    """

    votes: int = 10
    fewshot_folds: list[int] = field(default_factory=lambda: list(range(10)))
    svm: bool = False
    vote_permute: bool | None = None


@dataclass
class OutputConfig:
    """Run directory (`{task}` and `{time}` are filled in), TensorBoard and progress bar."""

    dir: str = "runs/{task}-{time}"
    tensorboard: bool = False
    progress: bool = True


@dataclass
class ExperimentConfig:
    """The whole experiment. `compat` (None, "pointmap", "mamba3d", "pointmae") reproduces a
    public release: the model is built with `compat=` (`map3d.models.compat`), and the engine
    fields it lists that the config leaves unset (None) take the release's values."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    compat: str | None = None

    def __post_init__(self):
        for path, value, choices in (
            ("optim.weight_decay_groups", self.optim.weight_decay_groups, ("map3d", "release")),
            ("schedule.interval", self.schedule.interval, ("step", "epoch")),
        ):
            if value is not None and value not in choices:
                raise ConfigError(f"{path}: expected one of {choices} or null, got {value!r}")
        if self.train.compile not in ("auto", True, False):
            raise ConfigError(
                f"train.compile: expected auto, true (on) or false (off), got {self.train.compile!r}"
            )
        if self.compat is not None:
            from map3d.models.compat import COMPATS, get_release

            if self.compat not in COMPATS:
                raise ConfigError(f"compat: expected one of {COMPATS} or null, got {self.compat!r}")
            for path, value in get_release(self.compat).engine.items():
                section, name = path.split(".")
                if getattr(getattr(self, section), name) is None:
                    setattr(getattr(self, section), name, value)
        self.model_config()  # the model's config is checked now, before any dataset is built

    def model_config(self, model_task: str | None = None, filled: dict | None = None) -> Any:
        """The typed config of this experiment's model (e.g. a `PointPretrainConfig`): preset
        `model.name` for `model_task` (default: the one `train.task` trains) with
        `model.overrides` applied, then `filled` (sizes a task takes from its dataset, such as
        num_classes, when the overrides leave them unset); the experiment's `compat` applies
        unless the overrides name one. Refusals are one-line ConfigErrors naming the key and
        the value, e.g. "model.overrides.num_regions=7: num_groups=64 must be divisible by
        num_regions=7 (G % R == 0)"."""
        from map3d.models.registry import resolve_config

        if model_task is None:
            from map3d.engine.tasks import get_task

            try:
                model_task = get_task(self.train.task).model_task
            except ValueError as err:  # "train.task: unknown task ..."
                raise ConfigError(str(err)) from None
        overrides = {**self.model.overrides, **(filled or {})}
        if self.compat is not None:
            overrides.setdefault("compat", self.compat)
        return resolve_config(self.model.name, model_task, overrides, where="model.overrides")


# ----------------------------------------------------------------------------- size limits

MAX_CONFIG_VALUES = 10_000
MAX_CONFIG_DEPTH = 32
MAX_CONFIG_STRING = 4096
_PLAIN = (type(None), bool, int, float, str)


def check_config_data(data: Any, where: str) -> None:
    """Refuse config data that is not small and plain, before anything copies or prints it.

    Limits: at most MAX_CONFIG_VALUES values counting every use of a YAML alias or shared
    reference (an alias "bomb" expands exponentially when copied), nesting at most
    MAX_CONFIG_DEPTH deep, strings at most MAX_CONFIG_STRING characters, and only None, bools,
    numbers, strings, lists and mappings with plain keys. `where` names the file in the error.
    """
    count, stack = 0, [(data, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        count += 1
        name = path or "top level"
        if count > MAX_CONFIG_VALUES:
            raise ConfigError(
                f"{where}: more than {MAX_CONFIG_VALUES:,} values once aliases and shared "
                "references are expanded; refused (configs are small)"
            )
        if depth > MAX_CONFIG_DEPTH:
            raise ConfigError(f"{where}: {name} nests deeper than {MAX_CONFIG_DEPTH} levels")
        if isinstance(value, str) and len(value) > MAX_CONFIG_STRING:
            raise ConfigError(
                f"{where}: {name} is a string of {len(value):,} characters (limit "
                f"{MAX_CONFIG_STRING})"
            )
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, _PLAIN):
                    raise ConfigError(f"{where}: {name} has a key of type {type(key).__name__}")
                stack.append((item, f"{path}.{key}" if path else str(key), depth + 1))
        elif isinstance(value, (list, tuple)):
            stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))
        elif not isinstance(value, _PLAIN):
            raise ConfigError(
                f"{where}: {name} is a {type(value).__name__}; config values are numbers, "
                "strings, true/false, lists and mappings"
            )


def _deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: circular 'base' include")
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    with open(path) as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: invalid YAML: {err}") from err
    check_config_data(data, str(path))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is not None:
        data = _deep_merge(_read_yaml(path.parent / base, seen + (path,)), data)
    return data


def config_from_dict(data: dict, *, defaults: ExperimentConfig | None = None) -> ExperimentConfig:
    """Fill an ExperimentConfig (starting from `defaults`) from a nested dict, strictly."""
    start = asdict(defaults if defaults is not None else ExperimentConfig())
    unknown = [k for k in data if k not in start]
    if unknown:
        fill(ExperimentConfig, {unknown[0]: None})  # raises with the key path
    merged = {k: {**start[k], **v} if isinstance(v, dict) else v for k, v in data.items()}
    return fill(ExperimentConfig, {**start, **merged})


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    *,
    defaults: ExperimentConfig | None = None,
) -> ExperimentConfig:
    """YAML file (or just `defaults`) + `a.b=value` overrides → validated ExperimentConfig."""
    cfg = defaults if defaults is not None else ExperimentConfig()
    if path is not None:
        try:
            cfg = config_from_dict(_read_yaml(Path(path)), defaults=cfg)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
    return apply_overrides(cfg, overrides or [])


def parse_override(text: str) -> tuple[list[str], Any]:
    """`"optim.lr=1e-4"` → (["optim", "lr"], 0.0001); the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set expects KEY=VALUE (e.g. optim.lr=1e-4), got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {key}: cannot parse value {raw!r}: {err}") from err
    check_config_data(value, f"--set {key}")
    if isinstance(value, str) and _looks_like_float(value):
        value = float(value)  # YAML 1.1 reads "1e-4" as a string
    return key.split("."), value


def _looks_like_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.strip().lower() not in ("nan", "inf", "-inf", "infinity", "-infinity")


def apply_overrides(cfg: ExperimentConfig, overrides: list[str]) -> ExperimentConfig:
    """Apply `a.b=value` strings in order; each is type-checked against the schema."""
    data = asdict(cfg)
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for i, key in enumerate(keys[:-1]):
            if not isinstance(node, dict) or key not in node:
                where = ".".join(keys[: i + 1])
                raise ConfigError(f"--set {text}: unknown config key '{where}'")
            node = node[key]
        if not isinstance(node, dict):
            raise ConfigError(f"--set {text}: '{'.'.join(keys[:-1])}' is not a section")
        node[keys[-1]] = value  # unknown leaf keys are caught by fill() below
    try:
        return fill(ExperimentConfig, data)
    except ConfigError as err:
        raise ConfigError(f"--set: {err}") from None


def config_to_dict(cfg: ExperimentConfig) -> dict:
    """Plain nested dict (YAML/JSON/`weights_only` checkpoint friendly)."""
    return asdict(cfg)


def save_config(cfg: ExperimentConfig, path: str | Path) -> None:
    """Write the resolved config as YAML; `load_config(path)` gives it back."""
    with atomic_write(path, "w") as f:
        yaml.safe_dump(config_to_dict(cfg), f, sort_keys=False)


# ----------------------------------------------------------------------------- resuming

# Settings a resumed run may change: how long and how it runs, where it reads and writes, what
# it logs. Everything else defines the model, the data or the objective.
RESUME_CHANGEABLE = (
    "schedule.epochs",
    "train.device",
    "train.log_every_steps",
    "train.checkpoint_every_steps",
    "train.max_steps",
    "train.eval_every_epochs",
    "train.dist_timeout_s",
    "train.step_mode",
    "train.compile",
    "train.pretrained",
    "train.pretrained_prefix",
    "train.allow_partial_pretrained",
    "data.root",
    "data.num_workers",
    "data.eval_batch_size",
    "eval.*",
    "output.*",
)


def _flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _changeable(key: str) -> bool:
    return any(key == k or (k.endswith(".*") and key.startswith(k[:-1])) for k in RESUME_CHANGEABLE)


def check_resume_config(saved: dict, cfg: ExperimentConfig, source: str) -> None:
    """Refuse to resume `source` (whose config is `saved`) under `cfg` if they differ in a
    setting outside `RESUME_CHANGEABLE`; the error lists every such key, old → new."""
    old = _flatten(config_to_dict(config_from_dict(saved)))
    new = _flatten(config_to_dict(cfg))
    changed = [
        k
        for k in sorted(old.keys() | new.keys())
        if old.get(k) != new.get(k) and not _changeable(k)
    ]
    if changed:
        listed = ", ".join(f"{k} ({old.get(k)!r} -> {new.get(k)!r})" for k in changed)
        raise ConfigError(
            f"--resume {source}: these settings differ from the checkpoint's and would change "
            f"the model, data or objective: {listed}; resume without them, or start a new run "
            "(a new --out) with them"
        )


# ----------------------------------------------------------------------------- defaults per task


# The built-in experiments, as files: the YAML is the one source of truth.
DEFAULT_CONFIGS = {"pretrain": "pretrain/synthetic.yaml", "classify": "finetune/synthetic.yaml"}
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def default_config(task: str) -> ExperimentConfig:
    """The built-in synthetic-shapes experiment run by `map3d pretrain|finetune` without
    --config: configs/pretrain/synthetic.yaml or configs/finetune/synthetic.yaml, read from the
    repository map3d runs from (minutes on a 2-core CPU, see README.md)."""
    if task not in DEFAULT_CONFIGS:
        raise ConfigError(f"no built-in default config for task {task!r}; pass --config")
    path = CONFIG_DIR / DEFAULT_CONFIGS[task]
    if not path.is_file():
        raise ConfigError(
            f"the built-in {task} config {path} is missing (map3d runs from an install without "
            "the repository's configs/ folder: install it with `pip install -e .`); pass --config"
        )
    return load_config(path)
