"""The run state lives in one dataclass (RunState) that checkpoints save whole; resume and settings guards."""

from __future__ import annotations

import json
import math

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_tickets import FixedTicketCallback, LotteryTicketCallback
from lightning_tickets.state import RunState, state_from_dict, state_to_dict
from lightning_tickets.toy import ToyClassifier, ToyDataModule

DATA = {"num_samples": 64, "batch_size": 32}  # 2 batches per epoch


def _trainer(callbacks, tmp_path, **kw):
    kw.setdefault("max_epochs", 4)
    return L.Trainer(
        accelerator="cpu", callbacks=callbacks, logger=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, default_root_dir=tmp_path, enable_checkpointing=any(
            isinstance(c, ModelCheckpoint) for c in callbacks), **kw,
    )  # fmt: skip


def _cb(tmp_path, **kw):
    kw.setdefault("epochs_per_round", 1)
    return LotteryTicketCallback(
        target_sparsity=0.75, schedule=[0.5, 0.75], ticket_dir=str(tmp_path / "tickets"), plot=False, **kw
    )


def test_every_attribute_mutated_during_fit_lives_in_the_run_state(tmp_path):
    """Only ``state`` (the RunState) and the derived per-fit runtime may change on the callback during a fit."""
    cb = _cb(tmp_path, monitor="val/acc")
    before = {k: repr(v) for k, v in vars(cb).items()}
    _trainer([cb], tmp_path).fit(ToyClassifier(), ToyDataModule(**DATA))
    changed = {k for k, v in vars(cb).items() if repr(v) != before.get(k)}
    lightning_owned = {"log", "log_dict"}  # Lightning binds these on every callback during hooks
    assert changed - lightning_owned <= {"state", "_run"}, changed
    assert cb.state.finished and len(cb.state.rows) == 3


def test_state_dict_saves_every_field_and_round_trips():
    st = RunState(round=2, boundary=True, last_val_step=7, last_val_score=0.5, rows=[{"round": 0}], run_id="abc")
    st.masks = {"w": torch.tensor([[True, False], [False, True]])}
    st.snapshot = {"w": torch.randn(2, 2)}
    torch.rand(3, generator=st.generator)
    sd = state_to_dict(st)
    assert set(sd) == {"version"} | {f for f in vars(RunState()) if not f.startswith("_")}
    back = state_from_dict(sd)
    for name in ("round", "boundary", "last_val_step", "last_val_score", "rows", "run_id"):
        assert getattr(back, name) == getattr(st, name)
    assert torch.equal(back.masks["w"], st.masks["w"]) and torch.equal(back.snapshot["w"], st.snapshot["w"])
    assert torch.equal(torch.rand(3, generator=back.generator), torch.rand(3, generator=st.generator))


def test_newer_state_version_is_refused():
    with pytest.raises(ValueError, match="newer than this lightning-tickets reads"):
        state_from_dict({"version": 99})


def test_resume_from_checkpoint_saved_at_validation_end(tmp_path):
    """Issue 15 item 2: epochs_per_round=2, validation every 2 epochs, checkpoint at validation end."""
    kw = dict(epochs_per_round=2, monitor="val/acc")
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1, save_on_train_epoch_end=False,
                           filename="{epoch}")  # fmt: skip
    ref = _cb(tmp_path / "ref", **kw)
    _trainer([ref, ckpt], tmp_path, max_epochs=6, check_val_every_n_epoch=2).fit(ToyClassifier(), ToyDataModule(**DATA))
    resumed = _cb(tmp_path / "ref", **kw)
    _trainer([resumed], tmp_path, max_epochs=6, check_val_every_n_epoch=2).fit(
        ToyClassifier(), ToyDataModule(**DATA), ckpt_path=tmp_path / "ckpt" / "epoch=1.ckpt"
    )
    assert [r["score"] for r in resumed.results] == [r["score"] for r in ref.results]
    assert resumed.state.finished


@pytest.mark.parametrize(
    ("setting", "value"), [("monitor", "val/loss"), ("mode", "min"), ("tolerance", 0.95), ("reset_optimizer", False)]
)
def test_resume_with_a_changed_setting_names_both_values(tmp_path, setting, value):
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1, filename="{epoch}")
    _trainer([_cb(tmp_path, monitor="val/acc"), ckpt], tmp_path).fit(ToyClassifier(), ToyDataModule(**DATA))
    other = _cb(tmp_path, **{"monitor": "val/acc", setting: value})
    with pytest.raises(ValueError, match=f"{setting}: checkpoint .*, now {value!r}"):
        _trainer([other], tmp_path).fit(
            ToyClassifier(), ToyDataModule(**DATA), ckpt_path=tmp_path / "ckpt" / "epoch=0.ckpt"
        )


def test_resume_into_another_runs_ticket_dir_is_refused(tmp_path):
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1, filename="{epoch}")
    _trainer([_cb(tmp_path / "a", monitor="val/acc"), ckpt], tmp_path).fit(ToyClassifier(), ToyDataModule(**DATA))
    _trainer([_cb(tmp_path / "b", monitor="val/acc")], tmp_path).fit(ToyClassifier(), ToyDataModule(**DATA))
    summary_b = (tmp_path / "b" / "tickets" / "summary.json").read_text()
    for target in ("b", "fresh"):
        cb = _cb(tmp_path / target, monitor="val/acc")
        with pytest.raises(FileExistsError, match="run"):
            _trainer([cb], tmp_path).fit(
                ToyClassifier(), ToyDataModule(**DATA), ckpt_path=tmp_path / "ckpt" / "epoch=1.ckpt"
            )
    assert (tmp_path / "b" / "tickets" / "summary.json").read_text() == summary_b  # untouched
    run_a = json.loads((tmp_path / "a" / "tickets" / "summary.json").read_text())["run_id"]
    assert run_a and run_a != json.loads(summary_b)["run_id"]


def test_nan_score_is_recorded_as_null_and_never_the_winning_ticket(tmp_path):
    class NaNAtRound1(ToyClassifier):
        def validation_step(self, batch, batch_idx):
            self.log("val/acc", float("nan") if self.current_epoch == 1 else 1.0)

    cb = _cb(tmp_path, monitor="val/acc")
    with pytest.warns(UserWarning, match="not a number"):
        _trainer([cb], tmp_path).fit(NaNAtRound1(), ToyDataModule(**DATA))
    summary = json.loads((tmp_path / "tickets" / "summary.json").read_text())  # strict JSON: no NaN literal
    assert summary["rounds"][1]["score"] is None
    assert summary["best_relaxed_ticket"] is None or summary["best_relaxed_ticket"]["round"] != 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(ticket_dir=""), "working directory"),
        (dict(ticket_dir="."), "working directory"),
        (dict(snapshot_device="bogus"), "not a torch device"),
        (dict(rate=1e-8, schedule="geometric"), "at most 1000"),
    ],
)
def test_bad_settings_are_refused_at_construction(kwargs, match):
    kw = dict(target_sparsity=0.9, epochs_per_round=1, **kwargs)
    with pytest.raises(ValueError, match=match):
        LotteryTicketCallback(**kw)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_snapshot_device_without_gpu_is_refused():
    with pytest.raises(ValueError, match="CUDA is not available"):
        LotteryTicketCallback(0.5, epochs_per_round=1, snapshot_device="cuda")


def test_ticket_argument_builds_a_fixed_ticket_callback(tmp_path):
    cb = LotteryTicketCallback(ticket=str(tmp_path / "t.safetensors"), ticket_mask="random")
    assert isinstance(cb, FixedTicketCallback) and cb.ticket_mask == "random"
    assert not math.isnan(cb.tolerance)


def test_early_stopping_before_the_last_round_is_reported_when_it_happens(tmp_path):
    from lightning.pytorch.callbacks import EarlyStopping

    stop = EarlyStopping(monitor="val/acc", mode="max", stopping_threshold=0.0)  # stops at the first validation
    cb = _cb(tmp_path, monitor="val/acc")
    with pytest.warns(UserWarning, match=r"EarlyStopping\(monitor='val/acc'\) stopped the fit in round 0 of 3") as rec:
        _trainer([cb, stop], tmp_path).fit(ToyClassifier(), ToyDataModule(**DATA))
    assert not cb.state.finished and len(cb.results) == 1
    assert not any("training stopped before IMP finished" in str(w.message) for w in rec)  # said once, precisely
    assert cb.state.early_stop_warned


def test_parameter_names_prunes_biases_too(tmp_path):
    cb = _cb(tmp_path, monitor=None, parameter_names=["weight", "bias"])
    _trainer([cb], tmp_path).fit(ToyClassifier(), ToyDataModule(**DATA))
    assert any(n.endswith(".bias") for n in cb.masks) and any(n.endswith(".weight") for n in cb.masks)
    with pytest.raises(ValueError, match="1-d parameters"):
        cb = LotteryTicketCallback(
            granularity="2:4", schedule=[0.25], parameter_names=["bias"], monitor=None, epochs_per_round=1,
            ticket_dir=str(tmp_path / "h"), plot=False,
        )  # fmt: skip
        _trainer([cb], tmp_path).fit(ToyClassifier(), ToyDataModule(**DATA))


def test_corrupt_mask_state_names_the_tensor():
    st = RunState(masks={"enc.w": torch.ones(3, 5, dtype=torch.bool)})
    sd = state_to_dict(st)
    sd["masks"]["enc.w"]["bits"] = sd["masks"]["enc.w"]["bits"][:1]  # truncated
    with pytest.raises(ValueError, match="mask state for 'enc.w' is corrupt"):
        state_from_dict(sd)
