"""Classification metrics accumulated on the device, voting and few-shot aggregation.

Nothing here syncs with the host until `compute()`: meters add into device tensors, so a training
or evaluation loop can update them every batch and read them (after `all_reduce`) once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from map3d.engine.distributed import all_reduce_sum


class ConfusionMeter:
    """Confusion matrix `(num_classes, num_classes)` (rows = truth) summed over batches."""

    def __init__(self, num_classes: int, device: torch.device | str = "cpu"):
        if num_classes < 1:
            raise ValueError(f"num_classes: expected >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """pred (B,) and target (B,) int64 class ids."""
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
        flat = target.long() * self.num_classes + pred.long()
        self.matrix += torch.bincount(flat, minlength=self.num_classes**2).view_as(self.matrix)

    def all_reduce(self, reduce_fn: Callable[[Tensor], Tensor] = all_reduce_sum) -> None:
        reduce_fn(self.matrix)

    def compute(self) -> dict[str, float]:
        """`oa` and `macc` in percent, and the sample count `n`."""
        return {
            "oa": overall_accuracy(self.matrix),
            "macc": mean_class_accuracy(self.matrix),
            "n": int(self.matrix.sum()),
        }


def overall_accuracy(confusion: Tensor) -> float:
    """100 · correct / total from a confusion matrix (rows = truth)."""
    total = int(confusion.sum())
    return 100.0 * int(confusion.diagonal().sum()) / total if total else float("nan")


def mean_class_accuracy(confusion: Tensor) -> float:
    """Mean over classes present in the truth of their per-class accuracy, in percent."""
    per_class = confusion.sum(1)
    present = per_class > 0
    if not bool(present.any()):
        return float("nan")
    acc = confusion.diagonal()[present].double() / per_class[present].double()
    return 100.0 * float(acc.mean())


def vote_logits(logits: Sequence[Tensor] | Tensor) -> Tensor:
    """Average V passes of logits: list of (B,C) or a (V,B,C) tensor → (B,C)."""
    stacked = torch.stack(list(logits)) if not isinstance(logits, Tensor) else logits
    if stacked.dim() != 3:
        raise ValueError(f"logits: expected V passes of (B,C), got shape {tuple(stacked.shape)}")
    return stacked.float().mean(0)


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation (ddof=1; 0 for one value) of per-fold/per-seed results."""
    if len(values) == 0:
        raise ValueError("mean_std: no values")
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return {"mean": mean, "std": math.sqrt(var), "n": len(values)}


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) by its continued fraction (modified Lentz)."""
    if x <= 0.0 or x >= 1.0:
        return 0.0 if x <= 0.0 else 1.0
    if x > (a + 1) / (a + b + 2):
        return 1.0 - _betainc(b, a, 1.0 - x)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    front = math.exp(log_front + a * math.log(x) + b * math.log1p(-x)) / a
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 300):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < 1e-14:
            break
    return front * result


def student_t_two_sided_p(t: float, df: int) -> float:
    """P(|T| >= |t|) for Student's t with `df` degrees of freedom."""
    if math.isnan(t):
        return math.nan
    if math.isinf(t):
        return 0.0
    return _betainc(df / 2, 0.5, df / (df + t * t))


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Two-sided paired t-test of a - b (per-seed pairs): mean ± sample std of the differences,
    t, p (scipy.stats.ttest_rel when installed, else the same statistic with our t CDF), n."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(
            f"paired_t_test: need two equal-length lists of >= 2, got {len(a)}, {len(b)}"
        )
    diffs = [x - y for x, y in zip(a, b)]
    stats = mean_std(diffs)
    n = len(diffs)
    if stats["std"] == 0.0:
        t = 0.0 if stats["mean"] == 0.0 else math.copysign(math.inf, stats["mean"])
        p = 1.0 if stats["mean"] == 0.0 else 0.0
    else:
        t = stats["mean"] / (stats["std"] / math.sqrt(n))
        try:
            from scipy.stats import ttest_rel
        except ImportError:
            p = student_t_two_sided_p(t, n - 1)
        else:
            p = float(ttest_rel(a, b).pvalue)
    return {**stats, "t": t, "p": p}


class RunningMean:
    """Per-name sums of scalars weighted by sample count, kept on the device until `compute()`."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.sums: dict[str, Tensor] = {}
        self.counts: dict[str, Tensor] = {}

    def update(self, values: dict[str, Tensor], n: int) -> None:
        """Add `n` samples whose mean of each named value is `values[name]` (0-dim tensors)."""
        for name, value in values.items():
            if name not in self.sums:
                self.sums[name] = torch.zeros((), dtype=torch.float64, device=self.device)
                self.counts[name] = torch.zeros((), dtype=torch.float64, device=self.device)
            self.sums[name] += value.detach().double() * n
            self.counts[name] += n

    def _packed(self, reduce: bool) -> tuple[list[str], Tensor]:
        """The sorted names and one tensor of their sums then their counts (summed over
        processes when `reduce`: a collective, every process must hold the same names)."""
        names = sorted(self.sums)
        packed = torch.stack([self.sums[n] for n in names] + [self.counts[n] for n in names])
        if reduce:
            all_reduce_sum(packed)
        return names, packed

    def compute(self, reduce: bool = True) -> dict[str, float]:
        """Weighted means over everything since the last reset (summed over processes when
        `reduce`; every process must then hold the same names)."""
        if not self.sums:
            return {}
        names, packed = self._packed(reduce)
        values = packed.tolist()
        sums, counts = values[: len(names)], values[len(names) :]
        return {n: s / c for n, s, c in zip(names, sums, counts) if c}

    def reset(self) -> None:
        self.sums, self.counts = {}, {}

    def state_dict(self, reduce: bool = True) -> dict[str, dict[str, Tensor]]:
        """Sums and counts as CPU float64 tensors (summed over processes when `reduce`; a
        collective then, like `compute`): what `load_state_dict` needs to continue the means."""
        if not self.sums:
            return {"sums": {}, "counts": {}}
        names, packed = self._packed(reduce)
        packed = packed.cpu()
        return {
            "sums": dict(zip(names, packed[: len(names)])),
            "counts": dict(zip(names, packed[len(names) :])),
        }

    def load_state_dict(self, state: dict[str, dict[str, Tensor]]) -> None:
        self.sums = {n: v.to(self.device, torch.float64) for n, v in state["sums"].items()}
        self.counts = {n: v.to(self.device, torch.float64) for n, v in state["counts"].items()}
