"""Which mask maths computes the next round's masks: unstructured, heads / neurons, or N:M.

:class:`Pruner` is chosen once when a fit starts (:meth:`Pruner.prepare`) from the callback's ``granularity`` and
``method``; afterwards the callback (through its :class:`~lightning_tickets.layout.MaskStore`) just calls it. The
maths itself lives in :mod:`lightning_tickets.masks` (global / layer-wise / random) and
:mod:`lightning_tickets.structured` (heads, neurons, N:M).

Example:
    >>> import torch
    >>> pruner = Pruner(kind="global", method="magnitude")
    >>> w = {"a": torch.tensor([3.0, 1.0]), "b": torch.tensor([0.5, 2.0])}
    >>> {n: m.tolist() for n, m in pruner(w, None, 0.5, final=True).items()}
    {'a': [True, False], 'b': [False, True]}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from lightning.pytorch.utilities import rank_zero_info

from lightning_tickets.masks import compute_masks
from lightning_tickets.structured import (
    Structure,
    check_nm,
    check_structured_sparsity,
    find_structure,
    nm_round_masks,
    structured_masks,
)

__all__ = ["Pruner"]

STRUCTURED = ("heads", "neurons", "heads+neurons")


@dataclass
class Pruner:
    """Compute the next round's masks for one granularity.

    Attributes:
        kind: ``"global"``, ``"layerwise"``, ``"heads"``, ``"neurons"``, ``"heads+neurons"`` or ``"n:m"``.
        method: ``"magnitude"`` or ``"random"``.
        nm: ``(N, M)`` for ``kind="nm"``.
        structure: heads / neurons in scope, for the structured kinds.
        generator: the random-pruning generator (the run state's; used when ``method="random"``).
    """

    kind: str
    method: str = "magnitude"
    nm: tuple[int, int] | None = None
    structure: Structure | None = None
    generator: torch.Generator = field(default_factory=torch.Generator)

    def prepare(self, module: torch.nn.Module, params: Mapping[str, torch.Tensor], sparsities: Sequence[float]) -> None:
        """Find the heads / neurons in scope (structured kinds) or check the N:M shapes, refusing impossible
        schedules before training."""
        flat = [n for n, p in params.items() if p.dim() < 2]
        if flat and not self.unstructured:
            raise ValueError(
                f"granularity={self.kind!r} prunes heads / neurons / N:M groups of weight matrices, but the scope "
                f"holds 1-d parameters {flat[:3]} (biases?); use parameter_names=['weight'] or granularity='global'"
            )
        if self.kind in STRUCTURED:
            structure = find_structure(module).restricted(params)
            check_structured_sparsity(structure, self.kind, sparsities[-1])
            self.structure = structure
            rank_zero_info(
                f"[lightning-tickets] structured pruning ({self.kind}) over {len(structure.attention)} attention "
                f"blocks / {structure.num_heads} heads and {len(structure.ffn)} FFNs / {structure.num_neurons} "
                "neurons; the schedule's sparsities are fractions of heads / neurons removed"
            )
        elif self.nm is not None:
            check_nm(params, *self.nm)

    @property
    def unstructured(self) -> bool:
        """Global or layer-wise element masks (the only kinds a sharded layout supports)."""
        return self.kind in ("global", "layerwise")

    def __call__(
        self,
        params: Mapping[str, torch.Tensor],
        masks: Mapping[str, torch.Tensor] | None,
        target: float,
        final: bool,
    ) -> dict[str, torch.Tensor]:
        """The masks at sparsity ``target`` among the weights ``masks`` keeps (``final``: the last round)."""
        generator = self.generator if self.method == "random" else None
        if self.structure is not None:
            return structured_masks(params, self.structure, masks, target, self.kind, generator)
        if self.nm is not None:
            return nm_round_masks(params, masks, target, *self.nm, final=final, generator=generator)
        return compute_masks(params, masks, target, self.method, self.kind, self.generator)
