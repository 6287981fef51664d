"""VQA accuracy (Antol et al. 2015 / the official VQA evaluation) as a torchmetrics ``Metric``.

The official accuracy of an answer given by ``matches`` of the 10 annotators is ``min(1, matches / 3)`` averaged
over the 10 leave-one-annotator-out subsets, i.e. 0, 0.3, 0.6, 0.9, 1.0 for 0, 1, 2, 3, >=4 matches
(:func:`vqa_answer_score`). Datasets store these soft scores as a ``[num_answers]`` target vector per question; the
score of a prediction is then the target entry of the predicted (arg-max) answer.

Example:
    >>> import torch
    >>> metric = VQAScore()
    >>> logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0]])
    >>> target = torch.tensor([[0.0, 0.6, 1.0], [0.3, 0.0, 1.0]])
    >>> metric.update(logits, target)
    >>> round(float(metric.compute()), 4)  # (0.6 + 0.3) / 2
    0.45
"""

from __future__ import annotations

import torch
from torchmetrics import Metric


def vqa_answer_score(matches: int, num_annotators: int = 10) -> float:
    """Official soft score of an answer that ``matches`` of ``num_annotators`` humans gave.

    Average over the leave-one-out subsets of ``min(1, matches_in_subset / 3)``.

    Example:
        >>> [round(vqa_answer_score(m), 2) for m in range(6)]
        [0.0, 0.3, 0.6, 0.9, 1.0, 1.0]
    """
    if not 0 <= matches <= num_annotators:
        raise ValueError(f"matches must be in [0, {num_annotators}], got {matches}")
    total = 0.0
    for left_out in range(num_annotators):
        in_subset = matches - 1 if left_out < matches else matches
        total += min(1.0, in_subset / 3.0)
    return total / num_annotators


class VQAScore(Metric):
    """Mean VQA accuracy of arg-max predictions against soft target scores.

    ``update(preds, target)``: ``preds`` are ``[B, A]`` scores/logits (arg-max taken) or ``[B]`` answer indices;
    ``target`` is ``[B, A]`` soft scores in ``[0, 1]``. States are sums, reduced with ``"sum"`` across processes.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    score_sum: torch.Tensor
    total: torch.Tensor

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("score_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Accumulate the soft score of each predicted answer."""
        if target.dim() != 2:
            raise ValueError(f"target must be [batch, num_answers] soft scores, got shape {list(target.shape)}")
        if preds.dim() == 2:
            if preds.shape != target.shape:
                raise ValueError(f"preds {list(preds.shape)} and target {list(target.shape)} differ in shape")
            preds = preds.argmax(dim=1)
        elif preds.dim() != 1 or preds.shape[0] != target.shape[0]:
            raise ValueError(f"preds must be [batch, num_answers] or [batch] indices, got shape {list(preds.shape)}")
        scores = target.gather(1, preds.long().unsqueeze(1)).squeeze(1)
        self.score_sum += scores.double().sum()
        self.total += target.shape[0]

    def compute(self) -> torch.Tensor:
        """Mean score (0 when nothing was seen)."""
        return (self.score_sum / self.total.clamp(min=1)).float()
