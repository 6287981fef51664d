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

from collections.abc import Sequence

import lightning as L
from lightning.pytorch.cli import LightningCLI


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of the ``lightning-tickets`` console script (``LightningCLI`` with subclass modes).

    ``lightning-tickets ticket ...`` dispatches to the ticket tools (:mod:`lightning_tickets.tools`).
    """
    import sys

    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] == "ticket":
        from lightning_tickets.tools import main as tools_main

        raise SystemExit(tools_main(argv[1:]))
    LightningCLI(
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
