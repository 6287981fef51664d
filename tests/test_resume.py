"""Resume from EVERY checkpoint a run can write ends bit-identical to the uninterrupted run (issue 15, item 3).

One batch per epoch, so every optimizer step is also an epoch's last batch: a checkpoint saved at each batch end
(``every_n_train_steps=1``) is the hard case, where Lightning resumes past the validation / epoch end that came
after the batch, and the callback has to catch up. Checkpoints at epoch ends and at validation ends are covered too.
(Mid-epoch checkpoints of a multi-batch epoch with a plain dataloader are not exact in Lightning itself, which
restarts the epoch's data stream; see docs/callback.md, "Resume and fault tolerance".)
"""

from __future__ import annotations

import json
import shutil

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_tickets import LotteryTicketCallback, Ticket
from lightning_tickets.toy import ToyClassifier, ToyDataModule

DATA = {"num_samples": 16, "batch_size": 16}  # one batch per epoch


def _run(d, mode, monitor, rewind, checkpoints=None, ckpt_path=None):
    L.seed_everything(0, verbose=False)
    per = {"steps_per_round": 2} if mode == "steps" else {"epochs_per_round": 2}
    if mode == "steps":
        trainer_kw = dict(max_steps=6, val_check_interval=2, check_val_every_n_epoch=None)
    else:
        trainer_kw = dict(max_epochs=6)
    cb = LotteryTicketCallback(
        target_sparsity=0.75, schedule=[0.5, 0.75], rewind=rewind, monitor=monitor, plot=False,
        ticket_dir=str(d / "tickets"), **per,
    )  # fmt: skip
    callbacks = [cb, *(checkpoints or [])]
    trainer = L.Trainer(
        accelerator="cpu", callbacks=callbacks, logger=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, enable_checkpointing=bool(checkpoints), default_root_dir=d, **trainer_kw,
    )  # fmt: skip
    model = ToyClassifier(lr=0.05)
    trainer.fit(model, ToyDataModule(**DATA), ckpt_path=ckpt_path)
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    summary = json.loads((d / "tickets" / "summary.json").read_text())
    return cb, weights, summary


def _rows(summary):
    return [{k: r[k] for k in ("round", "sparsity", "score", "relative", "step", "epoch")} for r in summary["rounds"]]


@pytest.mark.parametrize("rewind", ["init", "late"])
@pytest.mark.parametrize("monitor", ["val/acc", None])
@pytest.mark.parametrize("mode", ["steps", "epochs"])
def test_resume_from_every_checkpoint_is_bit_identical(tmp_path, mode, monitor, rewind):
    rewind = "init" if rewind == "init" else ("step:1" if mode == "steps" else "epoch:1")
    checkpoints = [
        ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="batch-{step}", every_n_train_steps=1, save_top_k=-1),
        ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="epoch-{epoch}", every_n_epochs=1, save_top_k=-1,
                        save_on_train_epoch_end=True),
        ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="val-{epoch}", monitor="val/loss", save_top_k=-1,
                        save_on_train_epoch_end=False),  # another state_key: a monitor
    ]  # fmt: skip
    ref_cb, ref_w, ref_summary = _run(tmp_path / "ref", mode, monitor, rewind, checkpoints)
    assert ref_summary["finished"] and len(ref_summary["rounds"]) == 3
    ref_tickets = {p.name: Ticket.load(p).masks for p in (tmp_path / "ref" / "tickets").glob("round-*.safetensors")}
    files = sorted((tmp_path / "ckpt").glob("*.ckpt"))
    assert len(files) >= 12  # 6 batch ends + epoch ends + validation ends
    for ckpt in files:
        run_dir = tmp_path / f"resume-{ckpt.stem}"
        shutil.copytree(tmp_path / "ref", run_dir)  # the run's own ticket_dir, as it was when it finished
        cb, w, summary = _run(run_dir, mode, monitor, rewind, ckpt_path=ckpt)
        where = f"resumed from {ckpt.name}"
        assert _rows(summary) == _rows(ref_summary), where
        assert summary["run_id"] == ref_summary["run_id"] and summary["finished"], where
        for n in ref_w:
            assert torch.equal(w[n], ref_w[n]), f"{where}: weight {n}"
        for n, m in ref_cb.masks.items():
            assert torch.equal(cb.masks[n], m), f"{where}: mask {n}"
        for name, masks in ref_tickets.items():
            got = Ticket.load(run_dir / "tickets" / name).masks
            assert all(torch.equal(got[n], masks[n]) for n in masks), f"{where}: {name}"
