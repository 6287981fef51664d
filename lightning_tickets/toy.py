"""A small built-in toy model and data set for examples, tests and benchmarks (no downloads).

``ToyClassifier`` names its layers like a BERT encoder (``encoder.layer.N.intermediate.dense`` …, ``pooler.dense``),
so the ``"encoder"`` scope preset finds them. ``ToyDataModule`` draws a seeded synthetic classification task
(labels from a fixed random teacher network), learnable to high accuracy in a few epochs.

Example:
    >>> import lightning as L
    >>> from lightning_tickets import LotteryTicketCallback
    >>> cb = LotteryTicketCallback(0.5, rate=0.5, epochs_per_round=1, monitor="val/acc", ticket_dir="/tmp/lt-doc",
    ...                            overwrite=True, plot=False)
    >>> trainer = L.Trainer(max_epochs=2, callbacks=[cb], logger=False, enable_checkpointing=False,
    ...                     enable_progress_bar=False, enable_model_summary=False)
    >>> trainer.fit(ToyClassifier(), ToyDataModule(num_samples=256))  # doctest: +ELLIPSIS
    <BLANKLINE>
    ...
    >>> [round(r["sparsity"], 2) for r in cb.results]
    [0.0, 0.5]
"""

from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class _Dense(nn.Module):
    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.dense = nn.Linear(n_in, n_out)


class ToyBlock(nn.Module):
    """A residual feed-forward block named like a BERT layer."""

    def __init__(self, hidden: int, ffn: int) -> None:
        super().__init__()
        self.intermediate = _Dense(hidden, ffn)
        self.output = _Dense(ffn, hidden)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.output.dense(torch.relu(self.intermediate.dense(x))))


class ToyClassifier(L.LightningModule):
    """Feed-forward classifier with BERT-like names: embeddings → encoder.layer.N → pooler → head.

    Args:
        in_features: input size.
        hidden: width of the residual stream.
        ffn: width of each block's inner layer.
        num_layers: number of blocks.
        num_classes: output classes.
        lr: AdamW learning rate.
        scheduler: ``"none"``, ``"linear"`` (linear decay over one pruning round, per step) or ``"step"``
            (StepLR per epoch) — used by tests of the scheduler reset.
    """

    def __init__(
        self,
        in_features: int = 32,
        hidden: int = 64,
        ffn: int = 128,
        num_layers: int = 2,
        num_classes: int = 4,
        lr: float = 3e-3,
        scheduler: str = "none",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embeddings = nn.Linear(in_features, hidden)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList([ToyBlock(hidden, ffn) for _ in range(num_layers)])
        self.pooler = _Dense(hidden, hidden)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embeddings(x)
        for block in self.encoder.layer:
            h = block(h)
        return self.head(torch.tanh(self.pooler.dense(h)))

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = nn.functional.cross_entropy(logits, y)
        acc = (logits.argmax(-1) == y).float().mean()
        self.log(f"{stage}/loss", loss, prog_bar=stage != "train")
        self.log(f"{stage}/acc", acc, prog_bar=stage != "train")
        return loss

    def training_step(self, batch, batch_idx):  # noqa: D102
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):  # noqa: D102
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):  # noqa: D102
        self._step(batch, "test")

    def configure_optimizers(self):  # noqa: D102
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)
        if self.hparams.scheduler == "none":
            return opt
        if self.hparams.scheduler == "linear":
            from lightning_tickets.schedule import round_length

            total = round_length(self.trainer) or int(self.trainer.estimated_stepping_batches)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / max(1, total)))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        if self.hparams.scheduler == "step":
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
        raise ValueError(f"scheduler={self.hparams.scheduler!r} is unknown; use 'none', 'linear' or 'step'")


class ToyDataModule(L.LightningDataModule):
    """Seeded synthetic classification data: Gaussian inputs labelled by a fixed random teacher network.

    Args:
        num_samples: training samples (validation and test get a quarter each).
        in_features: input size (must match the model).
        num_classes: number of classes.
        batch_size: batch size.
        seed: data seed (the same seed gives the same data on every rank and run).
        shuffle: shuffle the training set each epoch.
    """

    def __init__(
        self,
        num_samples: int = 2048,
        in_features: int = 32,
        num_classes: int = 4,
        batch_size: int = 64,
        seed: int = 1234,
        shuffle: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()

    def setup(self, stage: str | None = None) -> None:  # noqa: D102
        hp = self.hparams
        g = torch.Generator().manual_seed(hp.seed)
        n = hp.num_samples + 2 * (hp.num_samples // 4)
        x = torch.randn(n, hp.in_features, generator=g)
        w1 = torch.randn(hp.in_features, 64, generator=g)
        w2 = torch.randn(64, hp.num_classes, generator=g)
        y = (torch.tanh(x @ w1) @ w2).argmax(-1)
        a, b = hp.num_samples, hp.num_samples + hp.num_samples // 4
        self.train_set = TensorDataset(x[:a], y[:a])
        self.val_set = TensorDataset(x[a:b], y[a:b])
        self.test_set = TensorDataset(x[b:], y[b:])

    def train_dataloader(self) -> DataLoader:  # noqa: D102
        return DataLoader(self.train_set, batch_size=self.hparams.batch_size, shuffle=self.hparams.shuffle)

    def val_dataloader(self) -> DataLoader:  # noqa: D102
        return DataLoader(self.val_set, batch_size=256)

    def test_dataloader(self) -> DataLoader:  # noqa: D102
        return DataLoader(self.test_set, batch_size=256)
