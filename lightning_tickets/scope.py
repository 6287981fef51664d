r"""Which parameters are prunable: presets, module classes, include/exclude regexes, parameter names.

**The rule.** A scope selects the parameter ``<module>.<attr>`` (a name as ``model.named_parameters()`` shows it,
e.g. ``encoder.layer.0.output.dense.weight``) when

* the module is an instance of one of ``modules`` (classes such as ``nn.Linear``, class names such as
  ``"Linear"``, or dotted import paths such as ``"torch.nn.Linear"``; default ``["Linear"]``),
* ``attr`` is one of ``parameter_names`` (default ``["weight"]``; ``["weight", "bias"]`` prunes biases too, as
  Lightning's ``ModelPruning(parameter_names=...)``),
* some ``include`` regex matches (``re.search``) the module name **or** the parameter name, and
* no ``exclude`` regex matches the module name or the parameter name.

Names are matched without ``torch.compile``'s ``_orig_mod.`` parts, so a scope written for the plain model selects
the same parameters of a model with compiled submodules.

So ``include=[r"encoder\.layer\.0\."]`` (a module-name regex) and ``include=[r"encoder\..*\.weight$"]`` (a
parameter-name regex) both work, and ``exclude=[r"\.bias$"]`` drops biases again.

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

import importlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import torch
from torch import nn

from lightning_tickets.ticket_format import plain_name

ScopeSpec = Union[str, Mapping[str, Any]]

#: Keys of a scope dict.
SCOPE_KEYS = ("include", "exclude", "modules", "parameter_names")

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
    r"""A resolved scope specification (regexes compiled; module classes by class, name or dotted import path).

    Example:
        >>> from torch import nn
        >>> scope = Scope.parse({"include": [r"\.weight$"], "modules": [nn.Linear], "parameter_names": ["weight"]})
        >>> scope.to_dict()["modules"], scope.selects("fc.weight", "fc", nn.Linear(2, 2))
        (['torch.nn.modules.linear.Linear'], True)
    """

    include: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    modules: tuple[str | type, ...] = ("Linear",)
    name: str = "custom"
    parameter_names: tuple[str, ...] = ("weight",)
    _inc: list[re.Pattern] = field(default_factory=list, compare=False, repr=False)
    _exc: list[re.Pattern] = field(default_factory=list, compare=False, repr=False)
    _classes: tuple[type, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def parse(cls, spec: ScopeSpec | Scope, parameter_names: Sequence[str] | None = None) -> Scope:
        """Parse a preset name or ``dict(include=[...], exclude=[...], modules=[...], parameter_names=[...])``.

        ``parameter_names`` (if given) overrides the spec's (e.g. a preset's ``["weight"]``).
        """
        if isinstance(spec, Scope):
            return (
                spec if parameter_names is None else cls.parse({**spec.to_dict(), "parameter_names": parameter_names})
            )
        if isinstance(spec, str):
            if spec not in PRESETS:
                raise ValueError(
                    f"scope={spec!r} is not a preset; use one of {sorted(PRESETS)} or "
                    "dict(include=[regex, ...], exclude=[regex, ...], modules=['Linear'], parameter_names=['weight'])"
                )
            d, name = dict(PRESETS[spec]), spec
        elif isinstance(spec, Mapping):
            unknown = set(spec) - set(SCOPE_KEYS) - {"name"}
            if unknown:
                raise ValueError(f"scope has unknown keys {sorted(unknown)}; allowed: {', '.join(SCOPE_KEYS)}")
            d = {"include": [r".*"], "exclude": [], "modules": ["Linear"], **dict(spec)}
            name = str(d.pop("name", "custom"))
        else:
            raise TypeError(f"scope must be a preset name or a dict, got {type(spec).__name__}")
        if parameter_names is not None:
            d["parameter_names"] = parameter_names
        d.setdefault("parameter_names", ["weight"])
        for key in SCOPE_KEYS:
            if isinstance(d[key], (str, type)):
                d[key] = [d[key]]
        inc, exc = [], []
        for key, out in (("include", inc), ("exclude", exc)):
            for rx in d[key]:
                try:
                    out.append(re.compile(rx))
                except (re.error, TypeError) as err:
                    raise ValueError(f"scope {key} regex {rx!r} is invalid: {err}") from None
        params = tuple(str(p) for p in d["parameter_names"])
        if not params or not all(p.isidentifier() for p in params):
            raise ValueError(
                f"scope parameter_names={list(d['parameter_names'])!r} must be attribute names such as "
                "['weight'] or ['weight', 'bias']"
            )
        modules = tuple(d["modules"])
        classes = tuple(_import_class(m) for m in modules if isinstance(m, type) or "." in m)
        return cls(tuple(d["include"]), tuple(d["exclude"]), modules, name, params, inc, exc, classes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description (stored in ticket metadata); :meth:`parse` reads it back."""
        return {
            "name": self.name,
            "include": list(self.include),
            "exclude": list(self.exclude),
            "modules": [_class_path(m) if isinstance(m, type) else m for m in self.modules],
            "parameter_names": list(self.parameter_names),
        }

    def matches(self, module_name: str, module: nn.Module) -> bool:
        """Whether ``module`` (qualified name ``module_name``) has the right class and its name is in scope."""
        return self.module_class_matches(module) and self._named(module_name)

    def module_class_matches(self, module: nn.Module) -> bool:
        """Whether ``module`` is an instance of one of :attr:`modules`."""
        if self._classes and isinstance(module, self._classes):
            return True
        names = {c.__name__ for c in type(module).__mro__}
        return any(m in names for m in self.modules if isinstance(m, str) and "." not in m)

    def selects(self, parameter_name: str, module_name: str, module: nn.Module) -> bool:
        r"""Whether parameter ``parameter_name`` (``<module_name>.<attr>``) of ``module`` is in scope (see the rule).

        Example:
            >>> from torch import nn
            >>> Scope.parse({"include": [r"^fc\.weight$"]}).selects("fc.weight", "fc", nn.Linear(2, 2))
            True
        """
        attr = parameter_name.rsplit(".", 1)[-1]
        if attr not in self.parameter_names or not self.module_class_matches(module):
            return False
        return self._named(module_name, parameter_name)

    def _named(self, *names: str) -> bool:
        if not any(rx.search(n) for rx in self._inc for n in names):
            return False
        return not any(rx.search(n) for rx in self._exc for n in names)


def _class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _import_class(entry: str | type) -> type:
    """``entry`` itself if a class, else the class at dotted path ``entry`` (``"torch.nn.Linear"``)."""
    if isinstance(entry, type):
        if not issubclass(entry, nn.Module):
            raise ValueError(f"scope modules entry {entry!r} is not an nn.Module subclass")
        return entry
    module_path, _, attr = entry.rpartition(".")
    try:
        found = getattr(importlib.import_module(module_path), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(
            f"scope modules entry {entry!r} cannot be imported ({err}); use a class (nn.Linear), a class name "
            "('Linear') or an importable dotted path ('torch.nn.Linear')"
        ) from None
    if not (isinstance(found, type) and issubclass(found, nn.Module)):
        raise ValueError(f"scope modules entry {entry!r} is not an nn.Module subclass")
    return found


def resolve_scope(
    model: nn.Module, spec: ScopeSpec | Scope, parameter_names: Sequence[str] | None = None
) -> list[tuple[str, torch.nn.Parameter]]:
    r"""Return ``[(parameter_name, parameter)]`` in scope, in ``model.named_parameters()`` order (tied ones once).

    ``parameter_names`` (if given) overrides the spec's, e.g. ``["weight", "bias"]`` to prune biases too.

    Raises:
        ValueError: if nothing matches (the message names the module classes and a few parameter names of the
            model), or if a requested parameter name exists on none of the selected modules.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
        >>> [n for n, _ in resolve_scope(net, {"modules": [nn.Linear], "include": [r"^0\."]}, ["weight", "bias"])]
        ['0.weight', '0.bias']
    """
    scope = Scope.parse(spec, parameter_names)
    out: list[tuple[str, nn.Parameter]] = []
    seen: set[int] = set()
    found_attrs: set[str] = set()
    for mname, module in model.named_modules():
        if not scope.module_class_matches(module):
            continue
        for attr, param in module.named_parameters(recurse=False):
            pname = f"{mname}.{attr}" if mname else attr
            if attr in scope.parameter_names and scope._named(plain_name(mname), plain_name(pname)):
                found_attrs.add(attr)
                if id(param) not in seen:
                    seen.add(id(param))
                    out.append((pname, param))
    if not out:
        names = [n for n, _ in model.named_parameters()]
        sample = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        classes = sorted({type(m).__name__ for m in model.modules()} - {type(model).__name__})
        described = scope.to_dict()
        raise ValueError(
            f"scope {described['name']!r} matches no parameter of {type(model).__name__} (modules "
            f"{described['modules']}, parameter_names {described['parameter_names']}, include {list(scope.include)}, "
            f"exclude {list(scope.exclude)}). The model's module classes: {', '.join(classes[:12])}"
            f"{', ...' if len(classes) > 12 else ''}; its parameters include: {sample}. Pass scope=dict(include=[...])"
            " with regexes over module or parameter names, modules=[nn.Linear, ...], or another preset."
        )
    missing = [p for p in scope.parameter_names if p not in found_attrs]
    if missing:
        raise ValueError(
            f"scope parameter_names {missing} match no parameter of the selected modules (found: "
            f"{sorted(found_attrs)}); drop them or select modules that have them"
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
