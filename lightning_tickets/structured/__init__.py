"""Structured (attention heads, FFN neurons) and N:M masks, as ordinary per-weight ``bool`` masks.

The callback's apply / rewind / ticket machinery works on per-weight masks; this module produces masks that zero
*whole* heads or neurons, or that follow an N:M pattern, so nothing else has to change.

* A **head** of an attention block is the ``head_size`` rows of its query, key and value weights plus the same
  ``head_size`` columns of its attention-output weight. Importance = L1 norm (sum of ``|w|``) of those weights.
* An FFN **neuron** is one row of the intermediate (up-projection) weight plus the same column of the output
  (down-projection) weight. Importance = L1 norm of those weights.
* Selection is **global** across blocks (all heads of the model compete, all neurons compete), with a floor of at
  least one head per attention block and one neuron per FFN. Already-pruned units stay pruned.
* **N:M**: within every group of ``M`` consecutive weights along the input dimension (the last dimension of a
  ``[out, in]`` weight; trailing dimensions are flattened for convolutions), keep the ``N`` largest ``|w|``.

Zeroing a head's attention-output columns removes the head's contribution exactly, whatever its biases, and so
does zeroing a neuron's output column; this is what makes the physically compacted model
(:func:`lightning_tickets.export.compact`) equal to the masked one.

Ties are broken deterministically: among equal scores the unit (or weight) with the lower index is pruned first
(globally: earlier block first), matching :mod:`lightning_tickets.masks`.

Example:
    >>> import torch
    >>> w = torch.tensor([[0.1, -0.9, 0.3, 0.2, 5.0, 4.0, -6.0, 0.0]])
    >>> nm_mask(w, 2, 4).int().tolist()
    [[0, 1, 1, 0, 1, 0, 1, 0]]
"""

from lightning_tickets.structured.model import (
    AttentionBlock,
    FeedForward,
    Masks,
    Structure,
    attention_ffn_layer,
    described_modules,
    find_structure,
)
from lightning_tickets.structured.nm import (
    NMReport,
    check_nm,
    nm_mask,
    nm_round_masks,
    nm_schedule,
    nm_violations,
    parse_nm,
)
from lightning_tickets.structured.units import (
    STRUCTURED,
    check_structured_sparsity,
    head_scores,
    is_structured,
    max_prunable,
    neuron_scores,
    parse_granularity,
    select_units,
    structured_masks,
    unit_alive,
)

__all__ = [
    "STRUCTURED",
    "Masks",
    "NMReport",
    "max_prunable",
    "nm_violations",
    "AttentionBlock",
    "attention_ffn_layer",
    "check_nm",
    "check_structured_sparsity",
    "described_modules",
    "FeedForward",
    "Structure",
    "find_structure",
    "head_scores",
    "is_structured",
    "neuron_scores",
    "nm_mask",
    "nm_round_masks",
    "nm_schedule",
    "parse_granularity",
    "parse_nm",
    "select_units",
    "structured_masks",
    "unit_alive",
]
