"""Which mask maths computes the next round's masks: unstructured, heads / neurons, or N:M.

:class:`Pruner` is chosen once when a fit starts (:meth:`Pruner.prepare`) from the callback's ``granularity`` and
``method`` / ``score`` / ``min_density``; afterwards the callback (through its
:class:`~lightning_tickets.layout.MaskStore`) just calls it, and feeds gradients to :meth:`Pruner.observe` when the
score needs them. The maths itself lives in :mod:`lightning_tickets.masks` (global / layer-wise / random),
:mod:`lightning_tickets.scores` (LAMP, Taylor, callable scores, ``min_density``) and
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
from lightning_tickets.scores import (
    Score,
    accumulate_taylor,
    check_min_density,
    guarded_masks,
    resolve_score,
    score_name,
    score_tensors,
)
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
        score: the importance score (see :mod:`lightning_tickets.scores`): ``"magnitude"``, ``"random"``,
            ``"lamp"``, ``"taylor"`` or a callable ``(name, param) -> scores``; ``None``: ``method``.
            ``method="random"`` is ``score="random"``. The structured kinds take ``"magnitude"`` / ``"random"``.
        min_density: with ``kind="global"``: each tensor keeps at least this fraction of its weights.
        sums: the accumulated Taylor scores (the run state's ``score_sums``, mutated in place; ``score="taylor"``).
    """

    kind: str
    method: str = "magnitude"
    nm: tuple[int, int] | None = None
    structure: Structure | None = None
    generator: torch.Generator = field(default_factory=torch.Generator)
    score: Score | None = None
    min_density: float = 0.0
    sums: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in ("magnitude", "random"):
            raise ValueError(f"method={self.method!r} is unknown; use 'magnitude' or 'random'")
        score = resolve_score(self.method if self.score is None else self.score)
        if self.method == "random" and score not in ("magnitude", "random"):
            raise ValueError(
                f"method='random' is score='random'; it cannot be combined with score={score_name(score)!r}"
            )
        self.score = "random" if self.method == "random" else score
        self.method = "random" if self.score == "random" else "magnitude"
        self.min_density = float(self.min_density)
        if not 0.0 <= self.min_density < 1.0:
            raise ValueError(f"min_density={self.min_density} is outside [0, 1); e.g. 0.01 keeps 1 % of each tensor")
        if not self.unstructured and self.score not in ("magnitude", "random"):
            raise ValueError(
                f"score={self.score_name!r} applies to granularity 'global' or 'layerwise'; {self.kind!r} ranks its "
                "units by their own magnitude (score='magnitude') or randomly (score='random')"
            )
        if self.min_density and self.kind != "global":
            raise ValueError(
                f"min_density={self.min_density} applies to granularity='global' only ({self.kind!r} keeps every "
                "tensor / block non-empty by construction)"
            )

    @classmethod
    def settings(
        cls, kind: str, method: str, nm: tuple[int, int] | None, score: Score | None, min_density: float
    ) -> tuple[str, Score, float]:
        """Validate a callback's arguments now (before any fit): ``(method, score, min_density)`` as resolved."""
        spec = cls(kind, method, nm, score=score, min_density=min_density)
        return spec.method, spec.score, spec.min_density  # type: ignore[return-value]

    @property
    def score_name(self) -> str:
        """The score's name (``module.qualname`` for a callable)."""
        return score_name(self.score if self.score is not None else self.method)

    @property
    def needs_gradients(self) -> bool:
        """The score reads gradients: :meth:`observe` must run after every backward pass."""
        return self.score == "taylor"

    def observe(self, params: Mapping[str, torch.Tensor]) -> None:
        """Accumulate the gradient-aware score of ``params`` (call after backward, before the optimizer step; a
        no-op unless :attr:`needs_gradients`). The sums live in :attr:`sums` (the run state's, checkpointed) and
        restart after every mask computation."""
        if self.needs_gradients:
            accumulate_taylor(self.sums, params)

    def sharding_problem(self) -> str | None:
        """Why a sharded (FSDP2) layout cannot run this pruner, or ``None``."""
        if not self.unstructured:
            return f"granularity={self.kind!r}"
        if self.score not in ("magnitude", "random"):
            return f"score={self.score_name!r}"
        if self.min_density:
            return f"min_density={self.min_density}"
        return None

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
        if self.min_density:
            check_min_density({n: p.numel() for n, p in params.items()}, self.min_density, sparsities[-1])

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
        if self.score in ("magnitude", "random") and not self.min_density:
            return compute_masks(params, masks, target, self.method, self.kind, self.generator)
        scores = score_tensors(self.score, params, masks, self.generator, self.sums)  # type: ignore[arg-type]
        new = guarded_masks(scores, masks, target, self.kind, self.min_density, absolute=self.score == "magnitude")
        self.sums.clear()  # the next round accumulates afresh
        return new
