"""The model description of structured pruning: which weights form an attention block's heads and an FFN's neurons.

Backbones describe themselves with :class:`Structure` (built with :func:`attention_ffn_layer` per transformer
layer); :func:`find_structure` finds the description of a model (or of the backbone a task module holds).

Example:
    >>> from lightning_tickets.backbones import Uniter
    >>> s = find_structure(Uniter("tiny", img_dim=4))
    >>> len(s.attention) > 0, len(s.ffn) > 0
    (True, True)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

import torch
from torch import nn

Masks = dict[str, torch.Tensor]


@dataclass(frozen=True)
class AttentionBlock:
    """One multi-head attention block: its four ``nn.Linear`` modules (qualified names) and head layout.

    Attributes:
        name: qualified name of the block (e.g. ``"encoder.layer.0.attention"``); the key of the unit.
        query, key, value: ``nn.Linear`` modules whose output rows are grouped by head (``[heads * head_size, in]``).
        output: the attention-output ``nn.Linear`` (writes to the residual stream; its *input* columns are grouped
            by head).
        core: the module holding the head-count attributes (``num_attention_heads``, ...).
        num_heads: number of heads; ``head_size``: size of one head.
        attrs: ``(attribute of core, "heads" | "all")`` pairs to update when heads are removed physically:
            ``"heads"`` = number of heads, ``"all"`` = heads x head_size.
    """

    name: str
    query: str
    key: str
    value: str
    output: str
    core: str
    num_heads: int
    head_size: int
    attrs: tuple[tuple[str, str], ...] = (("num_attention_heads", "heads"), ("all_head_size", "all"))

    @property
    def linears(self) -> tuple[str, str, str, str]:
        return (self.query, self.key, self.value, self.output)


@dataclass(frozen=True)
class FeedForward:
    """One position-wise feed-forward block: ``output(act(input(x)))`` with ``size`` intermediate neurons.

    Attributes:
        name: qualified name of the unit (e.g. ``"encoder.layer.0"``).
        input: the up-projection ``nn.Linear`` (``[size, hidden]``).
        output: the down-projection ``nn.Linear`` (``[hidden, size]``; writes to the residual stream).
        size: number of intermediate neurons.
    """

    name: str
    input: str
    output: str
    size: int

    @property
    def linears(self) -> tuple[str, str]:
        return (self.input, self.output)


@dataclass(frozen=True)
class Structure:
    """The attention blocks and FFNs of a model (what ``backbone.structure()`` returns).

    Example:
        >>> s = Structure((AttentionBlock("a", "a.q", "a.k", "a.v", "a.o", "a", 2, 4),), ())
        >>> s.prefixed("backbone.").attention[0].query, s.num_heads
        ('backbone.a.q', 2)
    """

    attention: tuple[AttentionBlock, ...] = ()
    ffn: tuple[FeedForward, ...] = ()

    @property
    def num_heads(self) -> int:
        return sum(b.num_heads for b in self.attention)

    @property
    def num_neurons(self) -> int:
        return sum(f.size for f in self.ffn)

    def prefixed(self, prefix: str) -> Structure:
        """The same structure with every module name prefixed (``"backbone."``)."""
        if not prefix:
            return self
        att = tuple(
            replace(
                b,
                name=prefix + b.name,
                query=prefix + b.query,
                key=prefix + b.key,
                value=prefix + b.value,
                output=prefix + b.output,
                core=prefix + b.core,
            )
            for b in self.attention
        )
        ffn = tuple(
            replace(f, name=prefix + f.name, input=prefix + f.input, output=prefix + f.output) for f in self.ffn
        )
        return Structure(att, ffn)

    def restricted(self, weight_names: Iterable[str]) -> Structure:
        """Only the units whose every ``nn.Linear`` weight is in ``weight_names`` (e.g. the pruning scope)."""
        names = set(weight_names)
        att = tuple(b for b in self.attention if all(f"{n}.weight" in names for n in b.linears))
        ffn = tuple(f for f in self.ffn if all(f"{n}.weight" in names for n in f.linears))
        return Structure(att, ffn)

    def residual_writers(self) -> list[str]:
        """``nn.Linear`` modules that write to the residual stream (never pruned along their output)."""
        return [b.output for b in self.attention] + [f.output for f in self.ffn]

    def __add__(self, other: Structure) -> Structure:
        return Structure(self.attention + other.attention, self.ffn + other.ffn)


def attention_ffn_layer(
    root: nn.Module,
    prefix: str,
    core: str,
    output: str,
    ffn: tuple[str, str] | None = None,
    attrs: tuple[tuple[str, str], ...] = (("num_attention_heads", "heads"), ("all_head_size", "all")),
) -> Structure:
    """Describe one transformer layer of ``root``: the attention block whose ``core`` module (``{prefix}.{core}``)
    holds ``query``/``key``/``value`` Linears and the ``num_attention_heads`` / ``attention_head_size`` attributes,
    its attention-output Linear ``{prefix}.{output}``, and optionally an FFN ``(input Linear, output Linear)``.

    Example:
        >>> from transformers import BertConfig
        >>> from transformers.models.bert.modeling_bert import BertLayer
        >>> layer = BertLayer(BertConfig(hidden_size=8, num_attention_heads=2, intermediate_size=16))
        >>> s = attention_ffn_layer(layer, "", "attention.self", "attention.output.dense", ("intermediate.dense",
        ...                         "output.dense"))
        >>> s.attention[0].name, s.attention[0].num_heads, s.attention[0].head_size, s.ffn[0].size
        ('attention', 2, 4, 16)
    """
    pre = f"{prefix}." if prefix else ""
    mod = root.get_submodule(pre + core)
    block = AttentionBlock(
        name=pre + core.rsplit(".", 1)[0] if "." in core else pre + core,
        query=f"{pre}{core}.query",
        key=f"{pre}{core}.key",
        value=f"{pre}{core}.value",
        output=pre + output,
        core=pre + core,
        num_heads=int(mod.num_attention_heads),
        head_size=int(mod.attention_head_size),
        attrs=attrs,
    )
    units: tuple[FeedForward, ...] = ()
    if ffn is not None:
        up, down = pre + ffn[0], pre + ffn[1]
        name = up.rsplit(".", 1)[0] if "." in ffn[0] else up
        units = (FeedForward(name, up, down, int(root.get_submodule(up).out_features)),)
    return Structure((block,), units)


def described_modules(model: nn.Module) -> list[tuple[str, nn.Module, Structure]]:
    """``(qualified name, module, its structure)`` for every outermost module of ``model`` (``model`` included) whose
    ``structure()`` method returns a :class:`Structure` (names in the structure are relative to that module)."""
    found: list[tuple[str, nn.Module, Structure]] = []
    for name, module in model.named_modules():
        if any(name == n or name.startswith(f"{n}.") for n, _, _ in found if n) or (found and found[0][0] == ""):
            continue
        fn = getattr(module, "structure", None)
        if callable(fn):
            s = fn()
            if isinstance(s, Structure):
                found.append((name, module, s))
    return found


def find_structure(model: nn.Module) -> Structure:
    """The structure of every module of ``model`` that describes itself (see :func:`described_modules`), with names
    prefixed by the module's qualified name, so they are names in ``model``.

    Raises:
        ValueError: if no module describes its structure (the message says what to implement).

    Example:
        >>> from lightning_tickets.backbones import Vilt
        >>> wrapper = nn.ModuleDict({"backbone": Vilt("tiny")})
        >>> find_structure(wrapper).attention[1].output
        'backbone.vilt.encoder.layer.1.attention.output.dense'
    """
    found = Structure()
    for name, _, s in described_modules(model):
        found = found + s.prefixed(f"{name}." if name else "")
    if not found.attention and not found.ffn:
        raise ValueError(
            f"{type(model).__name__} has no module with a structure() method describing its attention heads and FFN "
            "neurons; structured pruning supports the Uniter, Lxmert and Vilt backbones, or any module whose "
            "structure() returns a lightning_tickets.structured.Structure"
        )
    return found
