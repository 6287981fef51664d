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

import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from lightning_tickets.paths import resolve_local_path, resolve_pretrained_path

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel

log = logging.getLogger(__name__)

__all__ = [
    "BackboneOutput",
    "LoadReport",
    "PerturbFn",
    "VLBackbone",
    "check_config_fields",
    "checkpoint_dir",
    "load_hf_model",
    "parse_sdpa_backend",
    "preview_keys",
    "resolve_local_path",
    "resolve_pretrained_path",
]

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


@dataclass
class LoadReport:
    """Outcome of loading a checkpoint into a backbone.

    Attributes:
        loaded: model keys that received a tensor.
        missing_keys: model keys the checkpoint did not provide (they keep their current values).
        unexpected_keys: checkpoint keys the model has no parameter for (ignored, e.g. pre-training heads).
        untrained: ``nn.Linear`` modules loaded with an all-zero bias, i.e. never trained (they count as new layers).
    """

    loaded: list[str] = field(default_factory=list)
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    untrained: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------- loading (UNITER, LXMERT, ViLT)
def check_config_fields(config_cls: type[PretrainedConfig], fields: Mapping[str, Any]) -> None:
    """Refuse config overrides that are not fields of ``config_cls`` (typos would otherwise pass silently)."""
    default = config_cls()
    unknown = sorted(k for k in fields if not hasattr(default, k))
    if unknown:
        raise ValueError(f"unknown {config_cls.__name__} field(s) {unknown}")


def checkpoint_dir(path: str | os.PathLike[str], model_type: str) -> Path:
    """Local transformers checkpoint directory of ``model_type`` (a file inside it is accepted too).

    ``path`` is a local directory, ``"package:<module>"`` or a Hugging Face hub id (resolved through the hub cache,
    downloaded unless ``HF_HUB_OFFLINE=1``: :func:`~lightning_tickets.paths.resolve_pretrained_path`).

    Raises:
        FileNotFoundError: missing path, hub id neither cached nor downloadable, or no ``config.json``.
        ValueError: ``config.json`` describes another ``model_type``.

    Example:
        >>> import tempfile
        >>> from transformers import ViltConfig
        >>> with tempfile.TemporaryDirectory() as d:
        ...     ViltConfig().save_pretrained(d)
        ...     checkpoint_dir(d, "vilt") == Path(d)
        True
    """
    directory = resolve_pretrained_path(path, what="pretrained_path")
    if directory.is_file():
        directory = directory.parent
    cfg_file = directory / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(
            f"pretrained_path {os.fspath(path)!r}: no config.json in {directory} (expected a transformers "
            "save_pretrained directory)"
        )
    found = json.loads(cfg_file.read_text()).get("model_type")
    if found != model_type:
        raise ValueError(f"pretrained_path {os.fspath(path)!r} holds a {found!r} model, not {model_type!r}")
    return directory


def load_hf_model(
    model_cls: type[PreTrainedModel],
    directory: Path,
    config: PretrainedConfig,
    prefix: str,
    heads: tuple[str, ...] = (),
    logger: logging.Logger | None = None,
) -> tuple[PreTrainedModel, LoadReport]:
    """``model_cls.from_pretrained(directory, config=config, local_files_only=True)`` with a :class:`LoadReport`.

    Missing keys are reported with ``prefix`` (the attribute the backbone stores the model under); unexpected keys
    in the checkpoint's names. Missing keys are logged as warnings, unexpected keys too unless they belong to a known
    pre-training / task head (``heads`` prefixes, logged at INFO), to ``logger`` (the backbone module's logger; default
    this module's).

    Raises:
        ValueError: a tensor's shape differs between checkpoint and model (overrides changed a shape).
    """
    model, info = model_cls.from_pretrained(
        str(directory),
        config=config,
        local_files_only=True,
        output_loading_info=True,
        ignore_mismatched_sizes=True,
        **{_dtype_kwarg(): torch.get_default_dtype()},
    )
    mismatched = sorted(_describe_mismatch(m) for m in info.get("mismatched_keys") or ())
    if mismatched:
        raise ValueError(
            f"{directory}: {len(mismatched)} tensor(s) have a different shape than the model (config overrides?): "
            + "; ".join(mismatched[:5])
            + (" ..." if len(mismatched) > 5 else "")
        )
    own = {n for n, _ in model.state_dict().items()}
    missing = sorted(k for k in info.get("missing_keys") or () if k in own)
    report = LoadReport(
        loaded=sorted(prefix + k for k in own - set(missing)),
        missing_keys=sorted(prefix + k for k in missing),
        unexpected_keys=sorted(info.get("unexpected_keys") or ()),
    )
    out = logger or log
    source = f"{model_cls.__name__} from {directory}"
    out.info("%s: loaded %d tensors", source, len(report.loaded))
    if report.missing_keys:
        out.warning(
            "%s: %d missing key(s) keep their initialisation: %s",
            source,
            len(report.missing_keys),
            preview_keys(report.missing_keys),
        )
    surprising = [k for k in report.unexpected_keys if not k.startswith(heads)]
    if surprising:
        out.warning("%s: %d unexpected key(s) ignored: %s", source, len(surprising), preview_keys(surprising))
    if len(surprising) < len(report.unexpected_keys):
        out.info(
            "%s: %d pre-training/task head key(s) ignored: %s",
            source,
            len(report.unexpected_keys) - len(surprising),
            preview_keys([k for k in report.unexpected_keys if k.startswith(heads)]),
        )
    return model, report


def _dtype_kwarg() -> str:
    """``"dtype"`` where ``from_pretrained`` takes it (transformers >= 4.56), else the older ``"torch_dtype"``."""
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def _describe_mismatch(item: Any) -> str:
    if isinstance(item, (tuple, list)) and len(item) == 3:
        key, ckpt, model = item
        return f"{key}: checkpoint {list(ckpt)} vs model {list(model)}"
    return str(item)


def preview_keys(keys: list[str], n: int = 6) -> str:
    """The first ``n`` of ``keys`` for a log line.

    Example:
        >>> preview_keys(["a", "b", "c"], n=2)
        'a, b, ... (1 more)'
    """
    return ", ".join(keys[:n]) + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")
