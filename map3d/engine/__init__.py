"""Training engine: typed configs, tasks, the shared training loop, checkpoints, metrics.

Entry points: `map3d.engine.runs` (train / train_fewshot / evaluate_checkpoint / svm_probe) and
the CLI commands in `map3d.engine.commands`. Tasks live in `map3d.engine.tasks`.
"""

from map3d.engine.config import (
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    default_config,
    load_config,
    save_config,
)

__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "apply_overrides",
    "default_config",
    "load_config",
    "save_config",
]
