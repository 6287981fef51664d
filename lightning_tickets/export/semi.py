"""N:M tickets on GPUs: ``torch.sparse.to_sparse_semi_structured`` (2:4 sparse tensor cores).

Semi-structured sparsity needs a CUDA GPU with sparse tensor cores (compute capability >= 8.0: Ampere, Hopper,
...), fp16 / bf16 weights (int8 too) and 2:4 weights. On any other machine :func:`to_semi_structured` converts nothing
and says why; the model is left as it is.

Example:
    >>> import torch
    >>> report = to_semi_structured(torch.nn.Linear(64, 64))  # on a CPU-only machine
    >>> report.converted, bool(report.reason)
    ([], True)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["SemiStructuredReport", "semi_structured_support", "to_semi_structured"]

_DTYPES = (torch.float16, torch.bfloat16)


@dataclass
class SemiStructuredReport:
    """``converted``: Linear modules whose weight is now a semi-structured sparse tensor; ``skipped``: module ->
    why not; ``reason``: why nothing was converted at all (empty when the device supports it)."""

    converted: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    reason: str = ""


def semi_structured_support() -> str:
    """Empty string when a CUDA device with semi-structured sparsity support is present, else the reason why not."""
    if not hasattr(torch.sparse, "to_sparse_semi_structured"):
        return f"torch {torch.__version__} has no torch.sparse.to_sparse_semi_structured (needs torch >= 2.1)"
    if not torch.cuda.is_available():
        return "no CUDA device: semi-structured (2:4) sparse kernels need an NVIDIA GPU with compute capability >= 8.0"
    major, minor = torch.cuda.get_device_capability()
    if major < 8:
        return f"CUDA device capability {major}.{minor} < 8.0: no sparse tensor cores (Ampere or newer needed)"
    return ""


def _is_2_4(w: torch.Tensor) -> bool:
    if w.dim() != 2 or w.shape[1] % 4:
        return False
    return bool(((w.reshape(w.shape[0], -1, 4) != 0).sum(-1) <= 2).all())


@torch.no_grad()
def to_semi_structured(model: nn.Module, names: list[str] | None = None) -> SemiStructuredReport:
    """Replace the weight of every 2:4-sparse ``nn.Linear`` (or those in ``names``) by a semi-structured sparse
    tensor, in place, when the hardware supports it; otherwise convert nothing and explain why (also as a warning).

    Move the model to the GPU and to fp16 / bf16 first (``model.half().cuda()``). Weights that do not follow 2:4
    (e.g. layers outside the ticket's scope), have an unsupported dtype or shape (the kernels need at least 32 rows
    and 64 columns, multiples of those) are skipped and listed in ``report.skipped``.
    """
    report = SemiStructuredReport(reason=semi_structured_support())
    if report.reason:
        warnings.warn(f"to_semi_structured: nothing converted: {report.reason}", stacklevel=2)
        return report
    from torch.sparse import to_sparse_semi_structured

    wanted = None if names is None else set(names)
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or (wanted is not None and name not in wanted):
            continue
        w = module.weight
        if w.device.type != "cuda" or w.dtype not in _DTYPES:
            report.skipped[name] = f"weight is {w.dtype} on {w.device}; needs fp16/bf16 on CUDA"
        elif not _is_2_4(w):
            report.skipped[name] = "weight is not 2:4 sparse along its input dimension"
        else:
            try:
                module.weight = nn.Parameter(to_sparse_semi_structured(w), requires_grad=False)
                report.converted.append(name)
            except (RuntimeError, ValueError) as err:  # shape constraints of the kernels
                report.skipped[name] = str(err).splitlines()[0]
    return report
