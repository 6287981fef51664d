"""Export tickets to models that run faster: physically smaller models (heads / neurons removed) and N:M sparse
weights for GPUs with semi-structured sparsity support.

Example:
    >>> import torch
    >>> from lightning_tickets.backbones import Uniter
    >>> torch.manual_seed(0) and None
    >>> model = Uniter("tiny", img_dim=8)
    >>> small, plan = compact(model, heads=0.5)
    >>> [layer.attention.self.num_attention_heads for layer in small.encoder.layer], plan.summary()["heads"]
    ([2, 2], [4, 8])
"""

from lightning_tickets.export.compact import Compacted, compact, example_batch
from lightning_tickets.export.plan import HeadPlan, NeuronPlan, PrunePlan, apply_plan, rebuild
from lightning_tickets.export.semi import SemiStructuredReport, semi_structured_support, to_semi_structured

__all__ = [
    "Compacted",
    "HeadPlan",
    "NeuronPlan",
    "PrunePlan",
    "SemiStructuredReport",
    "apply_plan",
    "compact",
    "example_batch",
    "rebuild",
    "semi_structured_support",
    "to_semi_structured",
]
