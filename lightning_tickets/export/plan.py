"""The prune plan: which heads and neurons a compact model keeps, as JSON, and how to rebuild the model from it.

torch-pruning's own state-dict loader (``tp.load_state_dict``) does not work with transformers 5.x models, so a
compact model is persisted as **plan + plain state dict**: build the model from its original config, shrink it with
:func:`apply_plan` (plain slicing of the ``nn.Linear`` weights and an update of the attention modules' head
counts; no torch-pruning involved), then load the compact state dict.

Example:
    >>> import torch
    >>> from lightning_tickets.backbones import Uniter
    >>> from lightning_tickets.export import compact
    >>> torch.manual_seed(0) and None
    >>> small, plan = compact(Uniter("tiny", img_dim=8), heads=0.5, neurons=0.5)
    >>> plan.summary()
    {'heads': [4, 8], 'neurons': [64, 128]}
    >>> again = rebuild(Uniter("tiny", img_dim=8), PrunePlan.from_json(plan.to_json()), small.state_dict())
    >>> again.encoder.layer[0].intermediate.dense.out_features == small.encoder.layer[0].intermediate.dense.out_features
    True
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["FORMAT", "HeadPlan", "NeuronPlan", "PrunePlan", "apply_plan", "rebuild", "slice_linear"]

FORMAT = "lightning-tickets/prune-plan"
VERSION = 1


@dataclass
class HeadPlan:
    """Kept heads of one attention block (module names relative to the compacted model)."""

    query: str
    key: str
    value: str
    output: str
    core: str
    num_heads: int
    head_size: int
    kept: list[int]
    attrs: list[list[str]] = field(default_factory=lambda: [["num_attention_heads", "heads"], ["all_head_size", "all"]])

    def channels(self) -> list[int]:
        """Output channels of query/key/value (input columns of the output Linear) that are kept."""
        d = self.head_size
        return [h * d + j for h in self.kept for j in range(d)]


@dataclass
class NeuronPlan:
    """Kept intermediate neurons of one feed-forward block."""

    input: str
    output: str
    size: int
    kept: list[int]


@dataclass
class PrunePlan:
    """Kept heads / neurons per block (keys: block names), plus metadata (source ticket, tool versions, ...)."""

    attention: dict[str, HeadPlan] = field(default_factory=dict)
    ffn: dict[str, NeuronPlan] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ statistics
    def summary(self) -> dict[str, list[int]]:
        """``{"heads": [kept, total], "neurons": [kept, total]}``."""
        att, ffn = self.attention.values(), self.ffn.values()
        return {
            "heads": [sum(len(a.kept) for a in att), sum(a.num_heads for a in att)],
            "neurons": [sum(len(f.kept) for f in ffn), sum(f.size for f in ffn)],
        }

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "metadata": self.metadata,
            "attention": {k: asdict(v) for k, v in self.attention.items()},
            "ffn": {k: asdict(v) for k, v in self.ffn.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PrunePlan:
        if d.get("format") != FORMAT:
            raise ValueError(f"not a prune plan (format={d.get('format')!r}, expected {FORMAT!r})")
        if int(d.get("version", 0)) > VERSION:
            raise ValueError(
                f"prune plan version {d.get('version')} is newer than this lightning-tickets reads ({VERSION}); upgrade"
            )
        return cls(
            attention={k: HeadPlan(**v) for k, v in d.get("attention", {}).items()},
            ffn={k: NeuronPlan(**v) for k, v in d.get("ffn", {}).items()},
            metadata=dict(d.get("metadata", {})),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> PrunePlan:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the plan as JSON; returns the path."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(self.to_json())
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PrunePlan:
        return cls.from_json(Path(path).read_text())


# ---------------------------------------------------------------------------------------------- slicing
@torch.no_grad()
def slice_linear(linear: nn.Linear, dim: int, keep: Sequence[int]) -> None:
    """Keep only the output rows (``dim=0``) or input columns (``dim=1``) ``keep`` of ``linear``, in place."""
    idx = torch.as_tensor(list(keep), dtype=torch.long, device=linear.weight.device)
    w = linear.weight
    linear.weight = nn.Parameter(w.index_select(dim, idx).clone(), requires_grad=w.requires_grad)
    if dim == 0:
        if linear.bias is not None:
            b = linear.bias
            linear.bias = nn.Parameter(b.index_select(0, idx).clone(), requires_grad=b.requires_grad)
        linear.out_features = len(idx)
    else:
        linear.in_features = len(idx)


def set_head_attrs(core: nn.Module, attrs: Sequence[Sequence[str]], heads: int, head_size: int) -> None:
    """Update the head-count attributes of an attention module after heads were removed."""
    for attr, what in attrs:
        setattr(core, attr, heads if what == "heads" else heads * head_size)


def _linear(model: nn.Module, name: str) -> nn.Linear:
    mod = model.get_submodule(name)
    if not isinstance(mod, nn.Linear):
        raise TypeError(f"{name} is a {type(mod).__name__}, not an nn.Linear")
    return mod


def apply_plan(model: nn.Module, plan: PrunePlan) -> nn.Module:
    """Shrink a full-size ``model`` (built from its original config) to the plan's shapes, in place, by slicing.

    Raises:
        ValueError: if a module's shape does not match the plan's original size (wrong config, or already compact).
    """
    for name, a in plan.attention.items():
        q = _linear(model, a.query)
        if q.out_features != a.num_heads * a.head_size:
            raise ValueError(
                f"{name}: {a.query} has {q.out_features} outputs but the plan expects the original {a.num_heads} heads "
                f"x {a.head_size}; build the model from its original (uncompacted) config"
            )
        ch = a.channels()
        for lin in (a.query, a.key, a.value):
            slice_linear(_linear(model, lin), 0, ch)
        slice_linear(_linear(model, a.output), 1, ch)
        set_head_attrs(model.get_submodule(a.core), a.attrs, len(a.kept), a.head_size)
    for name, f in plan.ffn.items():
        up = _linear(model, f.input)
        if up.out_features != f.size:
            raise ValueError(
                f"{name}: {f.input} has {up.out_features} outputs but the plan expects the original {f.size} neurons; "
                "build the model from its original (uncompacted) config"
            )
        slice_linear(up, 0, f.kept)
        slice_linear(_linear(model, f.output), 1, f.kept)
    return model


def rebuild(
    model: nn.Module,
    plan: PrunePlan | str | os.PathLike[str],
    state_dict: Mapping[str, torch.Tensor],
    strict: bool = True,
) -> nn.Module:
    """The compact model: ``model`` (built from the original config) shrunk by ``plan``, then ``state_dict`` loaded.

    Does not use torch-pruning (its state-dict loader fails on transformers 5.x). ``plan`` may be a path to the JSON.
    """
    if not isinstance(plan, PrunePlan):
        plan = PrunePlan.load(plan)
    apply_plan(model, plan)
    model.load_state_dict(dict(state_dict), strict=strict)
    return model
