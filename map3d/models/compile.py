"""Backbone blocks and the point patch embedding compiled with `torch.compile`, in place
(`train.compile`, `map3d bench`).

On CUDA most of a block's time outside the scan and the matmuls is small elementwise kernels
(norms, gates, residuals, drop path); inductor fuses them. The ops of `map3d.ops` that run
their own kernels stay out of the traces. Blocks of one kind share a compiled graph per input
shape: DropPath keeps its rate out of the graph's constants. A modality wing marks more
module classes with `@compiled` (the point patch embedding: memory-bound passes over every
point of every patch).
"""

from __future__ import annotations

import torch
from torch import nn

from map3d.layers.compile import compile_problem
from map3d.models.backbone import BLOCKS

# the module classes that `compile_blocks` compiles: the backbone blocks and those marked
# `@compiled` by a modality wing
COMPILED: list[type[nn.Module]] = list(BLOCKS.values())


def compiled(cls: type[nn.Module]) -> type[nn.Module]:
    """Class decorator: `compile_blocks` (train.compile) compiles every module of this class."""
    COMPILED.append(cls)
    return cls


# Every compiled block runs the one code object `nn.Module._call_impl`, so its compiled graphs
# count against one recompile limit: each block kind x drop path on/off x train/eval x grad
# mode x input shape (encoder, decoder, evaluation batches and their last partial batch) is a
# graph of its own, more than dynamo's default of 8 (past it the blocks silently run eagerly).
RECOMPILE_LIMIT = 64


def resolve_compile(setting: bool | str, device: torch.device) -> tuple[bool, str]:
    """(compile the blocks?, a log line saying why) for `train.compile` (checked by the config):
    "auto" compiles unless `compile_problem(device)` names a reason, True / False decide."""
    if setting is False:
        return False, "blocks eager (train.compile=off)"
    problem = compile_problem(device) if setting == "auto" else None
    if problem is not None:
        return False, f"blocks eager: {problem}"
    return True, f"blocks compiled (train.compile={'auto' if setting == 'auto' else 'on'})"


def compile_blocks(model: nn.Module) -> int:
    """Compile every backbone block of `model` (encoder and decoder alike) and every module of
    a `@compiled` class in place with `torch.compile(dynamic=False)`; returns how many modules.
    State-dict keys are unchanged.

    Inductor's `fallback_random` (scoped to these compiles) keeps random ops on PyTorch's
    generators, so a compiled step draws what the eager step draws and a CUDA graph replays them.
    """
    blocks = [m for m in model.modules() if isinstance(m, tuple(COMPILED))]
    if blocks:
        import torch._dynamo  # only now: importing it takes seconds on a small CPU

        limit = torch._dynamo.config.cache_size_limit
        torch._dynamo.config.cache_size_limit = max(limit, RECOMPILE_LIMIT)
    for block in blocks:
        block.compile(dynamic=False, options={"fallback_random": True})
    return len(blocks)
