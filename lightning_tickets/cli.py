"""``lightning-tickets`` command line: LightningCLI for yaml runs.

Usage::

    lightning-tickets fit --config examples/toy/imp.yaml
    lightning-tickets fit --config examples/toy/imp.yaml --print_config
    lightning-tickets ticket info tickets/round-03.safetensors      # ticket tools: see lightning_tickets.tools

Any ``LightningModule`` / ``LightningDataModule`` importable by ``class_path`` can be used;
``LotteryTicketCallback`` goes
in ``trainer.callbacks``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.cli import LightningCLI


def cpu_bf16_warning(precision: Any, accelerator: Any, native: bool | None = None) -> str | None:
    """The warning to show when bf16 mixed precision would run on a CPU without native bf16 kernels, else ``None``.

    bf16 autocast halves the step time of the easy-VQA demo on a CPU with AVX512-BF16 or AMX, but on a CPU without
    them (most laptops before 2022, AVX2-only machines) the bf16 matrix products fall back to slow reference code.

    Example:
        >>> cpu_bf16_warning("bf16-mixed", "cpu", native=False)[:42]
        'trainer.precision=bf16-mixed on a CPU with'
        >>> cpu_bf16_warning("32-true", "cpu", native=False) is None
        True
    """
    if not str(precision).startswith("bf16") or str(accelerator) not in ("cpu", "auto"):
        return None
    if str(accelerator) == "auto" and torch.cuda.is_available():
        return None
    if native is None:
        try:
            native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            native = False
    if native:
        return None
    return (
        f"trainer.precision={precision} on a CPU without native bf16 kernels (no AVX512-BF16/AMX): bf16 matrix "
        "products will be much slower than float32 here. Pass --trainer.precision 32-true (or set it in the yaml)."
    )


class TicketsCLI(LightningCLI):
    """``LightningCLI`` that also warns about settings that are legal but slow on this machine (bf16 on old CPUs)."""

    def before_instantiate_classes(self) -> None:
        config = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
        trainer = config.get("trainer", {})
        message = cpu_bf16_warning(trainer.get("precision"), trainer.get("accelerator", "auto"))
        if message:
            warnings.warn(message, UserWarning, stacklevel=2)


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of the ``lightning-tickets`` console script (``LightningCLI`` with subclass modes).

    ``lightning-tickets ticket ...`` dispatches to the ticket tools (:mod:`lightning_tickets.tools`).
    """
    import sys

    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] == "ticket":
        from lightning_tickets.tools import main as tools_main

        raise SystemExit(tools_main(argv[1:]))
    TicketsCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=None if args is None else list(args),
        auto_configure_optimizers=False,
    )


if __name__ == "__main__":  # pragma: no cover
    main()
