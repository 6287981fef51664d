"""Which parameters are prunable: presets and include/exclude regexes over qualified module names.

A scope selects *weights of modules of given classes* (``nn.Linear`` by default) whose qualified module name matches
one of the ``include`` regexes and none of the ``exclude`` regexes (``re.search`` semantics).

Example:
    >>> import torch.nn as nn
    >>> class Net(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.encoder = nn.Module()
    ...         self.encoder.layer = nn.ModuleList([nn.Linear(4, 4) for _ in range(2)])
    ...         self.head = nn.Linear(4, 2)
    >>> [name for name, _ in resolve_scope(Net(), "encoder")]
    ['encoder.layer.0.weight', 'encoder.layer.1.weight']
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import torch
from torch import nn

ScopeSpec = Union[str, Mapping[str, Any]]

#: Excluded by every preset: embeddings, task heads, classifiers, LayerNorms (never Linear anyway).
_NEVER = [r"(^|\.)[A-Za-z_]*embeddings?(\.|$)", r"(^|\.)(head|heads|classifier|cls|lm_head)(\.|$)"]

PRESETS: dict[str, dict[str, Any]] = {
    # nn.Linear weights inside numbered transformer layers (BERT ``encoder.layer.N``, LXMERT ``l_layers``/``r_layers``/
    # ``x_layers``, ViT/ViLT ``layer.N``, ``layers.N``, ``blocks.N``, GPT ``h.N``) plus the pooler dense weight.
    "encoder": {
        "include": [r"(^|\.)[A-Za-z_]*(layer|layers|blocks|block|h)\.\d+(\.|$)", r"(^|\.)pooler(\.dense)?$"],
        "exclude": list(_NEVER),
        "modules": ["Linear"],
    },
    # every nn.Linear weight except embeddings and task heads.
    "linear": {"include": [r".*"], "exclude": list(_NEVER), "modules": ["Linear"]},
    # every nn.Linear and convolution weight, heads included (classic LTH on small vision models).
    "all": {"include": [r".*"], "exclude": [], "modules": ["Linear", "Conv1d", "Conv2d", "Conv3d"]},
}


@dataclass(frozen=True)
class Scope:
    """A resolved scope specification (regexes compiled, module classes by name)."""

    include: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    modules: tuple[str, ...] = ("Linear",)
    name: str = "custom"
    _inc: list[re.Pattern] = field(default_factory=list, compare=False, repr=False)
    _exc: list[re.Pattern] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def parse(cls, spec: ScopeSpec) -> Scope:
        """Parse a preset name or ``dict(include=[...], exclude=[...], modules=[...])``."""
        if isinstance(spec, Scope):
            return spec
        if isinstance(spec, str):
            if spec not in PRESETS:
                raise ValueError(
                    f"scope={spec!r} is not a preset; use one of {sorted(PRESETS)} or "
                    "dict(include=[regex, ...], exclude=[regex, ...], modules=['Linear'])"
                )
            d, name = PRESETS[spec], spec
        elif isinstance(spec, Mapping):
            unknown = set(spec) - {"include", "exclude", "modules"}
            if unknown:
                raise ValueError(f"scope has unknown keys {sorted(unknown)}; allowed: include, exclude, modules")
            d = {"include": [r".*"], "exclude": [], "modules": ["Linear"], **dict(spec)}
            name = "custom"
        else:
            raise TypeError(f"scope must be a preset name or a dict, got {type(spec).__name__}")
        for key in ("include", "exclude", "modules"):
            if isinstance(d[key], str):
                d[key] = [d[key]]
        inc, exc = [], []
        for key, out in (("include", inc), ("exclude", exc)):
            for rx in d[key]:
                try:
                    out.append(re.compile(rx))
                except re.error as err:
                    raise ValueError(f"scope {key} regex {rx!r} is invalid: {err}") from None
        return cls(tuple(d["include"]), tuple(d["exclude"]), tuple(d["modules"]), name, inc, exc)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description (stored in ticket metadata)."""
        return {
            "name": self.name,
            "include": list(self.include),
            "exclude": list(self.exclude),
            "modules": list(self.modules),
        }

    def matches(self, module_name: str, module: nn.Module) -> bool:
        """Whether ``module`` (qualified name ``module_name``) is in scope."""
        if type(module).__name__ not in self.modules and not any(
            cls.__name__ in self.modules for cls in type(module).__mro__
        ):
            return False
        if not any(rx.search(module_name) for rx in self._inc):
            return False
        return not any(rx.search(module_name) for rx in self._exc)


def resolve_scope(model: nn.Module, spec: ScopeSpec) -> list[tuple[str, torch.nn.Parameter]]:
    """Return ``[(parameter_name, parameter)]`` of the weights in scope, in ``named_modules`` order.

    Raises:
        ValueError: if nothing matches (the message lists a few of the model's parameter names).
    """
    scope = Scope.parse(spec)
    out: list[tuple[str, nn.Parameter]] = []
    seen: set[int] = set()
    for mname, module in model.named_modules():
        if not scope.matches(mname, module):
            continue
        weight = getattr(module, "weight", None)
        if not isinstance(weight, nn.Parameter) or id(weight) in seen:
            continue
        seen.add(id(weight))
        out.append((f"{mname}.weight" if mname else "weight", weight))
    if not out:
        names = [n for n, _ in model.named_parameters()]
        sample = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        raise ValueError(
            f"scope {spec!r} matches no parameter of {type(model).__name__} (modules {list(scope.modules)}, include "
            f"{list(scope.include)}, exclude {list(scope.exclude)}). The model's parameters include: {sample}. "
            "Pass scope=dict(include=[...]) with regexes over module names, or another preset."
        )
    return out


def scope_names(model: nn.Module, spec: ScopeSpec) -> list[str]:
    """Names of the parameters in scope (see :func:`resolve_scope`)."""
    return [n for n, _ in resolve_scope(model, spec)]


def describe(spec: ScopeSpec) -> dict[str, Any]:
    """JSON description of a scope spec."""
    return Scope.parse(spec).to_dict()


def as_list(x: str | Sequence[str]) -> list[str]:
    """Small helper: a str or a sequence of str as a list."""
    return [x] if isinstance(x, str) else list(x)
