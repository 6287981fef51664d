"""VCR multiple-choice accuracies: Q->A, QA->R and Q->AR (both right), as a torchmetrics ``Metric``.

In VCR's QA->R sub-task the question is paired with the *gold* answer, so Q->AR of a record is simply "the answer
and the rationale were both chosen right" (Zellers et al. 2019; UNITER reports Q->AR).

Example:
    >>> import torch
    >>> metric = VCRAccuracy()
    >>> qa = torch.tensor([[0.0, 2.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])   # picks 1, 0
    >>> qar = torch.tensor([[0.0, 0.0, 3.0, 0.0], [0.0, 0.0, 0.0, 1.0]])  # picks 2, 3
    >>> metric.update(qa, qar, torch.tensor([1, 2]), torch.tensor([2, 3]))
    >>> {k: round(float(v), 2) for k, v in metric.compute().items()}
    {'q2a': 0.5, 'qa2r': 1.0, 'q2ar': 0.5}
"""

from __future__ import annotations

import torch
from torchmetrics import Metric


class VCRAccuracy(Metric):
    """Q->A, QA->R and joint Q->AR accuracy from per-candidate scores.

    ``update(qa_scores, qar_scores, answer_label, rationale_label)`` with ``[B, num_choices]`` scores and ``[B]``
    labels; ``compute()`` returns ``{"q2a", "qa2r", "q2ar"}``. Count states, ``"sum"``-reduced across processes.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    q2a: torch.Tensor
    qa2r: torch.Tensor
    q2ar: torch.Tensor
    total: torch.Tensor

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for name in ("q2a", "qa2r", "q2ar", "total"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(
        self,
        qa_scores: torch.Tensor,
        qar_scores: torch.Tensor,
        answer_label: torch.Tensor,
        rationale_label: torch.Tensor,
    ) -> None:
        """Count right answers, right rationales and records with both right."""
        if qa_scores.dim() != 2 or qar_scores.shape != qa_scores.shape:
            raise ValueError(
                f"qa_scores {list(qa_scores.shape)} and qar_scores {list(qar_scores.shape)} must both be "
                "[batch, num_choices]"
            )
        a_ok = qa_scores.argmax(dim=1) == answer_label.long()
        r_ok = qar_scores.argmax(dim=1) == rationale_label.long()
        self.q2a += a_ok.sum()
        self.qa2r += r_ok.sum()
        self.q2ar += (a_ok & r_ok).sum()
        self.total += qa_scores.shape[0]

    def compute(self) -> dict[str, torch.Tensor]:
        """``{"q2a", "qa2r", "q2ar"}`` accuracies in ``[0, 1]``."""
        n = self.total.clamp(min=1).double()
        return {k: (getattr(self, k).double() / n).float() for k in ("q2a", "qa2r", "q2ar")}
