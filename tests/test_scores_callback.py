"""Scores, min_density and the layer-collapse warning inside real Trainer.fit runs on the toy model (CPU, seconds)."""

from __future__ import annotations

import json
import shutil
import warnings

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from lightning_tickets import LotteryTicketCallback, Ticket
from lightning_tickets.toy import ToyClassifier, ToyDataModule

SMALL = {"num_samples": 256, "batch_size": 64}  # 4 batches per epoch
SCOPE = {"include": [r"encoder\.layer", r"pooler\."]}  # the encoder and the (never-trained) pooler
POOLER = "pooler.dense.weight"


def _trainer(callbacks, tmp_path, **kw):
    kw.setdefault("max_epochs", 20)
    return L.Trainer(
        accelerator="cpu", devices=1, callbacks=callbacks, logger=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path, deterministic=True,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks), **kw,
    )  # fmt: skip


def _cb(tmp_path, **kw):
    kw.setdefault("schedule", [0.5, 0.8])
    kw.setdefault("epochs_per_round", 1)
    return LotteryTicketCallback(
        target_sparsity=None, scope=SCOPE, monitor="val/acc", ticket_dir=str(tmp_path / "tickets"), plot=False, **kw
    )


def _tiny_pooler_model(seed=0):
    """The MiniLM situation in small: a pooler whose weights are far smaller than the encoder's."""
    torch.manual_seed(seed)
    model = ToyClassifier()
    with torch.no_grad():
        model.pooler.dense.weight.mul_(1e-4)
    return model


def _fit(cb, tmp_path, model=None, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _trainer([cb], tmp_path, **kw).fit(model or _tiny_pooler_model(), ToyDataModule(**SMALL))
    return [str(w.message) for w in caught if "layer collapse" in str(w.message)]


def test_collapse_warned_when_it_happens_and_recorded_per_round(tmp_path):
    cb = _cb(tmp_path)
    seen_at_round_start = []

    class Probe(Callback):  # runs after the ticket callback: the new mask (and its warning) exist at batch start
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 0:
                seen_at_round_start.append((cb.state.round, sum("layer collapse" in str(w.message) for w in caught)))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _trainer([cb, Probe()], tmp_path).fit(_tiny_pooler_model(), ToyDataModule(**SMALL))
    msgs = [str(w.message) for w in caught if "layer collapse" in str(w.message)]
    assert len(msgs) == 2 and "round 1" in msgs[0] and "round 2" in msgs[1]
    assert f"{POOLER} keeps 0 of 4,096 weights" in msgs[0] and "score='lamp'" in msgs[0]
    assert "encoder.layer" not in msgs[0]  # only the collapsed tensor is named
    # the warning of round r is raised when round r's masks are computed, before round r trains
    assert seen_at_round_start == [(0, 0), (1, 1), (2, 2)]
    rows = json.loads((tmp_path / "tickets" / "summary.json").read_text())["rounds"]
    assert rows[0]["collapsed_tensors"] == {} and rows[0]["sparsest_tensor"]["density"] == 1.0
    for row in rows[1:]:
        assert row["collapsed_tensors"] == {POOLER: 0.0}
        assert row["sparsest_tensor"] == {"name": POOLER, "kept": 0, "total": 4096, "density": 0.0}
    masks = cb.masks
    kept = {n: int(m.sum()) for n, m in masks.items()}
    assert kept[POOLER] == 0  # what global magnitude does to a tiny layer


@pytest.mark.parametrize("guard", [{"score": "lamp"}, {"min_density": 0.05}])
def test_lamp_and_min_density_keep_the_tiny_pooler(tmp_path, guard):
    cb = _cb(tmp_path, **guard)
    assert _fit(cb, tmp_path) == []
    kept = int(cb.masks[POOLER].sum())
    assert kept >= (205 if "min_density" in guard else 1)  # ceil(0.05 * 4096) = 205
    total = sum(m.numel() for m in cb.masks.values())
    assert sum(int((~m).sum()) for m in cb.masks.values()) == round(0.8 * total)  # the global count stays exact
    summary = json.loads((tmp_path / "tickets" / "summary.json").read_text())
    assert summary["pruning_score"] == guard.get("score", "magnitude")
    assert summary["min_density"] == guard.get("min_density", 0)
    assert all(r["collapsed_tensors"] == {} for r in summary["rounds"])
    meta = Ticket.load(tmp_path / "tickets" / "round-02.safetensors").metadata
    assert meta["pruning_score"] == summary["pruning_score"] and meta["score"] == summary["rounds"][2]["score"]


def test_collapse_threshold_none_turns_the_warning_off(tmp_path):
    cb = _cb(tmp_path, collapse_threshold=None)
    assert _fit(cb, tmp_path) == []
    assert cb.results[1]["collapsed_tensors"] == {} and cb.results[1]["sparsest_tensor"]["name"] == POOLER


class TaylorProbe(Callback):
    """After the ticket callback: its own |w * grad| sums per round (float32, same order of additions) and the masks
    each round starts with."""

    def __init__(self, cb):
        self.cb, self.sums, self.masks = cb, {}, {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        params = dict(pl_module.named_parameters())
        acc = self.sums.setdefault(self.cb.state.round, {})
        for n in self.cb.masks or dict.fromkeys(self.cb._params):
            c = (params[n].detach() * params[n].grad).abs()
            acc[n] = c if n not in acc else acc[n] + c

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        r = self.cb.state.round
        if r not in self.masks:
            self.masks[r] = None if self.cb.masks is None else {n: m.clone() for n, m in self.cb.masks.items()}


def _sort_oracle(scores, alive, sparsity):
    """Stable sort of the alive scores (dead = +inf) over the concatenated tensors; prune the first k."""
    names = list(scores)
    flat = torch.cat([scores[n].reshape(-1).float() for n in names])
    keep = torch.cat([alive[n].reshape(-1) for n in names]) if alive else torch.ones_like(flat, dtype=torch.bool)
    k = round(sparsity * flat.numel()) - int((~keep).sum())
    order = torch.sort(flat.masked_fill(~keep, float("inf")), stable=True).indices
    keep = keep.clone()
    keep[order[:k]] = False
    out, start = {}, 0
    for n in names:
        out[n] = keep[start : start + scores[n].numel()].reshape(scores[n].shape)
        start += scores[n].numel()
    return out


def test_taylor_masks_equal_the_oracle_over_each_rounds_gradients(tmp_path):
    cb = _cb(tmp_path, score="taylor", schedule=[0.4, 0.7, 0.85])
    probe = TaylorProbe(cb)
    _trainer([cb, probe], tmp_path).fit(ToyClassifier(), ToyDataModule(**SMALL))
    assert sorted(probe.masks) == [0, 1, 2, 3] and probe.masks[0] is None
    for r, s in [(1, 0.4), (2, 0.7), (3, 0.85)]:
        ref = _sort_oracle(probe.sums[r - 1], probe.masks[r - 1], s)
        got = probe.masks[r]
        assert list(got) == list(ref) and all(torch.equal(got[n], ref[n]) for n in ref), r
    # different from magnitude on the same run: the gradients matter
    mag = _cb(tmp_path / "mag", schedule=[0.4, 0.7, 0.85])
    _trainer([mag], tmp_path).fit(ToyClassifier(), ToyDataModule(**SMALL))
    assert not all(torch.equal(mag.masks[n], cb.masks[n]) for n in cb.masks)
    assert cb.state.score_sums == {} or all(t.dtype == torch.float32 for t in cb.state.score_sums.values())


def _final_masks(cb):
    return {n: m.clone() for n, m in cb.masks.items()}


@pytest.mark.parametrize("resume_epoch", [0, 2])
def test_resume_keeps_the_accumulated_taylor_scores(tmp_path, resume_epoch):
    """Rounds of 2 epochs; epoch 0 and 2 are mid-round: the checkpoint must carry the round's partial sums."""
    kw = dict(score="taylor", epochs_per_round=2, schedule=[0.5, 0.75])
    L.seed_everything(0)
    cb = _cb(tmp_path / "a", **kw)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1, filename="{epoch}")
    _trainer([cb, ckpt], tmp_path, max_epochs=6).fit(ToyClassifier(), ToyDataModule(**SMALL))
    ref = _final_masks(cb)
    saved = torch.load(tmp_path / "ckpt" / f"epoch={resume_epoch}.ckpt", weights_only=False)
    state = next(v for k, v in saved["callbacks"].items() if "LotteryTicketCallback" in k)
    assert set(state["score_sums"]) == set(ref) and all(t.device.type == "cpu" for t in state["score_sums"].values())

    L.seed_everything(0)
    cb2 = _cb(tmp_path / "a", **kw)
    _trainer([cb2], tmp_path, max_epochs=6).fit(
        ToyClassifier(), ToyDataModule(**SMALL), ckpt_path=tmp_path / "ckpt" / f"epoch={resume_epoch}.ckpt"
    )
    got = _final_masks(cb2)
    assert all(torch.equal(ref[n], got[n]) for n in ref)
    assert [r["score"] for r in cb2.results] == [r["score"] for r in cb.results]


def test_resume_with_another_score_or_min_density_is_refused(tmp_path):
    cb = _cb(tmp_path, score="lamp")
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1, filename="{epoch}")
    _trainer([cb, ckpt], tmp_path).fit(ToyClassifier(), ToyDataModule(**SMALL))
    for other in ({}, {"score": "lamp", "min_density": 0.01}):
        with pytest.raises(ValueError, match="(score: checkpoint 'lamp', now 'magnitude'|min_density: checkpoint 0.0)"):
            _trainer([_cb(tmp_path, **other)], tmp_path).fit(
                ToyClassifier(), ToyDataModule(**SMALL), ckpt_path=tmp_path / "ckpt" / "epoch=0.ckpt"
            )


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"score": "snip"}, "score='snip' is unknown"),
        ({"method": "random", "score": "taylor"}, "method='random' is score='random'"),
        ({"min_density": 1.5}, r"min_density=1.5 is outside \[0, 1\)"),
        ({"min_density": 0.1, "granularity": "layerwise"}, "applies to granularity='global' only"),
        ({"score": "lamp", "granularity": "heads"}, "score='lamp' applies to granularity 'global' or 'layerwise'"),
    ],
)
def test_bad_score_arguments_fail_at_construction(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        _cb(tmp_path, **kw)


def test_infeasible_min_density_fails_before_training(tmp_path):
    cb = _cb(tmp_path, min_density=0.3)  # 0.8 sparsity keeps 20 %
    with pytest.raises(ValueError, match="min_density=0.3 needs .* kept weights"):
        _trainer([cb], tmp_path).fit(ToyClassifier(), ToyDataModule(**SMALL))
    assert not (tmp_path / "tickets").exists()


def test_score_random_is_method_random(tmp_path):
    a, b = _cb(tmp_path / "a", score="random"), _cb(tmp_path / "b", method="random")
    assert (a.method, a.score) == (b.method, b.score) == ("random", "random")
    for cb in (a, b):
        torch.manual_seed(0)
        _trainer([cb], tmp_path).fit(ToyClassifier(), ToyDataModule(**SMALL))
    assert all(torch.equal(a.masks[n], b.masks[n]) for n in a.masks)


def test_cli_config_takes_score_names_and_dotted_callables():
    """What LightningCLI / jsonargparse does with a YAML ``score:``: names stay names, dotted paths become callables."""
    from jsonargparse import ArgumentParser
    from test_scores import _importance

    parser = ArgumentParser()
    parser.add_class_arguments(LotteryTicketCallback, "cb")
    for value, expected in [("lamp", "lamp"), ("test_scores._importance", _importance)]:
        cfg = parser.parse_args(["--cb.epochs_per_round=1", f"--cb.score={value}", "--cb.min_density=0.01"])
        cb = parser.instantiate(cfg).cb
        assert cb.score == expected and cb.min_density == 0.01


def _taylor_run(d, ckpt_path=None, checkpoints=()):
    L.seed_everything(0, verbose=False)
    cb = LotteryTicketCallback(
        target_sparsity=0.75, schedule=[0.5, 0.75], steps_per_round=2, score="taylor", monitor="val/acc", plot=False,
        ticket_dir=str(d / "tickets"),
    )  # fmt: skip
    trainer = L.Trainer(
        accelerator="cpu", callbacks=[cb, *checkpoints], logger=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, enable_checkpointing=bool(checkpoints), default_root_dir=d,
        max_steps=6, val_check_interval=2, check_val_every_n_epoch=None,
    )  # fmt: skip
    trainer.fit(ToyClassifier(lr=0.05), ToyDataModule(num_samples=16, batch_size=16), ckpt_path=ckpt_path)
    return cb


def test_taylor_resume_from_every_batch_end_checkpoint_gives_the_same_masks(tmp_path):
    """A checkpoint after every optimizer step (one batch per epoch): each carries the sums so far."""
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="batch-{step}", every_n_train_steps=1, save_top_k=-1)
    ref = _taylor_run(tmp_path / "ref", checkpoints=[ckpt])
    files = sorted((tmp_path / "ckpt").glob("*.ckpt"))
    assert len(files) == 6
    for path in files:
        run_dir = tmp_path / f"resume-{path.stem}"
        shutil.copytree(tmp_path / "ref", run_dir)
        cb = _taylor_run(run_dir, ckpt_path=path)
        assert [r["score"] for r in cb.results] == [r["score"] for r in ref.results], path.name
        assert all(torch.equal(cb.masks[n], ref.masks[n]) for n in ref.masks), path.name
