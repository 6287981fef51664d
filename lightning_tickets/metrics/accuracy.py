"""Arg-max accuracy that counts out-of-vocabulary targets as wrong (GQA/VQA style).

``torchmetrics``' ``MulticlassAccuracy`` either rejects targets outside ``[0, num_classes)`` or, with
``ignore_index``, drops them from the denominator. The official GQA evaluation (and UNITER/LXMERT) count a question
whose answer is not in the answer vocabulary (label ``-1``) as answered wrongly, so :class:`ArgmaxAccuracy` keeps
them: a prediction is right only if it equals the target.

Example:
    >>> import torch
    >>> metric = ArgmaxAccuracy()
    >>> metric.update(torch.tensor([[0.1, 2.0], [3.0, 0.0], [0.0, 1.0]]), torch.tensor([1, 1, -1]))
    >>> round(float(metric.compute()), 4)  # 1 right of 3 (the -1 target counts as wrong)
    0.3333
"""

from __future__ import annotations

import torch
from torchmetrics import Metric


class ArgmaxAccuracy(Metric):
    """Fraction of predictions equal to the target.

    ``update(preds, target)``: ``preds`` are scores ``[..., C]`` (arg-max over the last dimension) or class indices
    of the same shape as ``target``; ``target`` holds class indices (any value outside ``[0, C)``, e.g. ``-1``,
    never matches). States are counts reduced with ``"sum"`` across processes.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    correct: torch.Tensor
    total: torch.Tensor

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("correct", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Count right predictions."""
        if preds.dim() == target.dim() + 1:
            preds = preds.argmax(dim=-1)
        if preds.shape != target.shape:
            raise ValueError(
                f"preds {list(preds.shape)} must be scores [..., C] or indices shaped like target {list(target.shape)}"
            )
        self.correct += (preds.long() == target.long()).sum()
        self.total += target.numel()

    def compute(self) -> torch.Tensor:
        """Accuracy in ``[0, 1]`` (0 when nothing was seen)."""
        return self.correct.double().div(self.total.clamp(min=1)).float()
