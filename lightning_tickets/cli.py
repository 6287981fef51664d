"""``lightning-tickets`` command line: LightningCLI for yaml runs.

Usage::

    lightning-tickets fit --config examples/toy/imp.yaml
    lightning-tickets fit --config examples/toy/imp.yaml --print_config

Any ``LightningModule`` / ``LightningDataModule`` importable by ``class_path`` can be used;
``LotteryTicketCallback`` goes
in ``trainer.callbacks``.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
from lightning.pytorch.cli import LightningCLI


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of the ``lightning-tickets`` console script (``LightningCLI`` with subclass modes)."""
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
