"""Ticket callbacks next to other callbacks: two disjoint scopes in one Trainer, ModelCheckpoint per round."""

from __future__ import annotations

import json
import warnings

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_tickets import LotteryTicketCallback, Ticket
from lightning_tickets.toy import ToyClassifier, ToyDataModule

SMALL = {"num_samples": 256, "batch_size": 64}  # 4 batches per epoch
LAYER0 = {"include": [r"^encoder\.layer\.0\."]}
LAYER1 = {"include": [r"^encoder\.layer\.1\."]}


def _cb(tmp_path, name, **kw):
    kw.setdefault("target_sparsity", 0.75)
    kw.setdefault("rate", 0.5)
    kw.setdefault("epochs_per_round", 1)
    kw.setdefault("rewind_head", False)  # required with two callbacks
    return LotteryTicketCallback(monitor="val/acc", ticket_dir=str(tmp_path / name), plot=False, **kw)


def _trainer(tmp_path, callbacks, checkpointing=False, **kw):
    return L.Trainer(
        accelerator="cpu",
        max_epochs=kw.pop("max_epochs", 20),
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=checkpointing,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
        **kw,
    )


def _model():
    torch.manual_seed(0)
    return ToyClassifier(num_layers=2)


def test_state_key_is_the_old_one_for_the_default_scope_and_differs_per_scope(tmp_path):
    default = _cb(tmp_path, "a")
    a, b = _cb(tmp_path, "b", scope=LAYER0), _cb(tmp_path, "c", scope=LAYER1)
    assert default.state_key == "LotteryTicketCallback"  # what checkpoints of earlier versions hold
    assert len({default.state_key, a.state_key, b.state_key}) == 3
    assert a.state_key == _cb(tmp_path, "d", scope=dict(LAYER0)).state_key  # stable: a resume finds it again


def test_two_callbacks_with_disjoint_scopes_prune_each_tower_to_its_own_sparsity(tmp_path):
    a = _cb(tmp_path, "t0", scope=LAYER0, target_sparsity=0.5)
    b = _cb(tmp_path, "t1", scope=LAYER1, target_sparsity=0.75)
    model = _model()
    _trainer(tmp_path, [a, b]).fit(model, ToyDataModule(**SMALL))
    assert [r["sparsity"] for r in a.results] == pytest.approx([0.0, 0.5])
    assert [r["sparsity"] for r in b.results] == pytest.approx([0.0, 0.5, 0.75])
    last0, last1 = (
        Ticket.load(tmp_path / "t0" / "round-01.safetensors"),
        Ticket.load(tmp_path / "t1" / "round-02.safetensors"),
    )
    assert all(n.startswith("encoder.layer.0.") for n in last0.masks) and last0.sparsity == pytest.approx(0.5)
    assert all(n.startswith("encoder.layer.1.") for n in last1.masks) and last1.sparsity == pytest.approx(0.75)
    params = dict(model.named_parameters())
    for ticket in (last0, last1):  # both masks are applied to the trained model
        for name, mask in ticket.masks.items():
            assert not params[name][~mask].any()


def test_two_callbacks_resume_each_from_its_own_state(tmp_path):
    def run(max_epochs, ckpt_path=None):
        a = _cb(tmp_path, "t0", scope=LAYER0, target_sparsity=0.5)
        b = _cb(tmp_path, "t1", scope=LAYER1, target_sparsity=0.75)
        ck = ModelCheckpoint(dirpath=tmp_path / "ck", filename="{epoch}", save_top_k=-1)
        _trainer(tmp_path, [a, b, ck], checkpointing=True, max_epochs=max_epochs).fit(
            _model(), ToyDataModule(**SMALL), ckpt_path=ckpt_path
        )
        return a, b

    first_a, first_b = run(20)
    # saved after epoch 1, the end of both callbacks' round 1 (a: its last round; b: 2 of 3 rounds)
    saved = torch.load(tmp_path / "ck" / "epoch=1.ckpt", weights_only=False)["callbacks"]
    assert saved[first_a.state_key]["finished"] and not saved[first_b.state_key]["finished"]
    assert len(saved[first_a.state_key]["rows"]) == len(saved[first_b.state_key]["rows"]) == 2
    a, b = run(20, ckpt_path=tmp_path / "ck" / "epoch=1.ckpt")
    assert a.state.run_id == first_a.state.run_id != b.state.run_id == first_b.state.run_id
    assert [r["round"] for r in a.results] == [0, 1] and [r["round"] for r in b.results] == [0, 1, 2]
    assert [r["step"] for r in b.results] == [r["step"] for r in first_b.results]
    assert json.loads((tmp_path / "t1" / "summary.json").read_text())["finished"] is True


def test_checkpoint_of_an_earlier_version_resumes_a_callback_with_another_scope(tmp_path):
    """Earlier versions saved every ticket callback under "LotteryTicketCallback", whatever its scope."""
    cb = _cb(tmp_path, "t", scope=LAYER0)
    ck = ModelCheckpoint(dirpath=tmp_path / "ck", filename="{epoch}", save_top_k=-1)
    _trainer(tmp_path, [cb, ck], checkpointing=True).fit(_model(), ToyDataModule(**SMALL))
    path = tmp_path / "ck" / "epoch=0.ckpt"
    ckpt = torch.load(path, weights_only=False)
    ckpt["callbacks"]["LotteryTicketCallback"] = ckpt["callbacks"].pop(cb.state_key)
    torch.save(ckpt, path)
    resumed = _cb(tmp_path, "t", scope=LAYER0)
    _trainer(tmp_path, [resumed]).fit(_model(), ToyDataModule(**SMALL), ckpt_path=path)
    assert resumed.state.run_id == ckpt["callbacks"]["LotteryTicketCallback"]["run_id"]
    assert [r["round"] for r in resumed.results] == [0, 1, 2]


@pytest.mark.parametrize(
    "second, match",
    [
        (dict(name="t0", scope=LAYER1), "same ticket_dir"),
        (dict(name="t1", scope={"include": [r"^encoder\.layer\.(0|1)\."]}), "prune the same 2 parameter"),
        (dict(name="t1", scope=LAYER1, rewind_head=True), "need rewind_head=False on each"),
    ],
)
def test_two_callbacks_must_have_own_ticket_dir_and_disjoint_scopes(tmp_path, second, match):
    a = _cb(tmp_path, "t0", scope=LAYER0)
    b = _cb(tmp_path, second.pop("name"), **second)
    with pytest.raises(ValueError, match=match):
        _trainer(tmp_path, [a, b]).fit(_model(), ToyDataModule(**SMALL))


def test_monitored_model_checkpoint_warns_naming_the_per_round_pattern(tmp_path):
    ck = ModelCheckpoint(
        dirpath=tmp_path / "ck", monitor="val/acc", mode="max", filename="round{tickets/round:.0f}",
        auto_insert_metric_name=False,
    )  # fmt: skip
    with pytest.warns(UserWarning, match=r"over all IMP rounds.*filename='round\{tickets/round:.0f\}'"):
        _trainer(tmp_path, [_cb(tmp_path, "t"), ck], checkpointing=True, max_epochs=3).fit(
            _model(), ToyDataModule(**SMALL)
        )
    # why: the round in the file name does not make the top-1 per round; one file is left for the 3 rounds
    assert len(list((tmp_path / "ck").iterdir())) == 1
    quiet = ModelCheckpoint(dirpath=tmp_path / "ck2", monitor="val/acc", save_top_k=-1)  # keeps all: nothing lost
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _trainer(tmp_path, [_cb(tmp_path, "t2"), quiet], checkpointing=True, max_epochs=3).fit(
            _model(), ToyDataModule(**SMALL)
        )
    assert not [w for w in caught if "IMP rounds" in str(w.message)]


def test_one_checkpoint_per_round_pattern_of_the_docs(tmp_path):
    """docs/callback.md: the round in the file name, every checkpoint kept, the round end's overwriting the others."""
    cb = _cb(tmp_path, "t", epochs_per_round=2)
    ck = ModelCheckpoint(
        dirpath=tmp_path / "ck",
        filename="round{tickets/round:.0f}",
        auto_insert_metric_name=False,
        save_top_k=-1,
        enable_version_counter=False,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*IMP rounds.*")
        _trainer(tmp_path, [cb, ck], checkpointing=True).fit(_model(), ToyDataModule(**SMALL))
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["round0.ckpt", "round1.ckpt", "round2.ckpt"]
    for row in cb.results:
        ckpt = torch.load(tmp_path / "ck" / f"round{row['round']}.ckpt", weights_only=False)
        assert ckpt["global_step"] == row["step"]  # saved at the round's end: the weights its score measured
        ticket = Ticket.load(tmp_path / "t" / row["ticket"])
        for name, mask in ticket.masks.items():
            assert not ckpt["state_dict"][name][~mask].any()
        if row["round"] > 0:
            assert ticket.sparsity == pytest.approx(row["sparsity"])
