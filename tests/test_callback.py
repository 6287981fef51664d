"""Behaviour of LotteryTicketCallback inside real Trainer.fit runs on the toy model (CPU, seconds each)."""

from __future__ import annotations

import copy
import json

import lightning as L
import pytest
import torch
import torch.nn.utils.prune as prune
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from lightning_tickets import LotteryTicketCallback, Ticket
from lightning_tickets.toy import ToyClassifier, ToyDataModule

SMALL = {"num_samples": 256, "batch_size": 64}  # 4 batches per epoch


def trainer(callbacks, tmp_path, **kw):
    kw.setdefault("max_epochs", 50)
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=kw.pop("enable_checkpointing", False),
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
        deterministic=True,
        **kw,
    )


def make_cb(tmp_path, **kw):
    kw.setdefault("target_sparsity", 0.9)
    kw.setdefault("rate", 0.5)
    if "steps_per_round" not in kw:
        kw.setdefault("epochs_per_round", 1)
    kw.setdefault("monitor", "val/acc")
    kw.setdefault("ticket_dir", str(tmp_path / "tickets"))
    kw.setdefault("plot", False)
    return LotteryTicketCallback(**kw)


class Probe(Callback):
    """Runs AFTER the ticket callback (later in the list) and records what the model looks like."""

    def __init__(self, cb: LotteryTicketCallback):
        self.cb = cb
        self.theta0 = None
        self.round_starts = []  # (round, params copy, optimizer state size, lr, masks copy)
        self.trained = {}  # round -> scope weights at round end (before the next mask)
        self.zero_violations = 0
        self.steps_checked = 0
        self._seen_round = -1
        self.optimizer_ids = []

    def on_fit_start(self, trainer, pl_module):
        self.theta0 = {n: p.detach().clone() for n, p in pl_module.named_parameters()}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        r = self.cb.state.round
        if r != self._seen_round:
            self._seen_round = r
            opt = trainer.optimizers[0]
            sched = trainer.lr_scheduler_configs[0].scheduler if trainer.lr_scheduler_configs else None
            self.round_starts.append(
                {
                    "round": r,
                    "params": {n: p.detach().clone() for n, p in pl_module.named_parameters()},
                    "opt_state": len(opt.state),
                    "opt_id": id(opt),
                    "opt": opt,  # keeps the object alive, so id() values cannot be recycled between rounds
                    "lr": opt.param_groups[0]["lr"],
                    "sched_epoch": None if sched is None else sched.last_epoch,
                    "masks": None if self.cb.masks is None else {n: m.clone() for n, m in self.cb.masks.items()},
                }
            )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        masks = self.cb.masks
        self.steps_checked += 1
        if masks is not None:
            params = dict(pl_module.named_parameters())
            for n, m in masks.items():
                if bool((params[n][~m] != 0).any()):
                    self.zero_violations += 1

    def on_train_epoch_end(self, trainer, pl_module):
        if self.cb.state.pending_transition:
            self.trained[self.cb.state.round] = {n: p.detach().clone() for n, p in self.cb._params.items()}


# ---------------------------------------------------------------------------------------------------------------
def test_imp_rewinds_exactly_resets_optimizer_and_matches_prune_oracle(tmp_path):
    L.seed_everything(0)
    cb = make_cb(tmp_path, target_sparsity=0.9, rate=0.5)  # 0, .5, .75, .875, .9 -> 5 rounds
    probe = Probe(cb)
    model = ToyClassifier(scheduler="linear")
    trainer(callbacks=[cb, probe], tmp_path=tmp_path).fit(model, ToyDataModule(**SMALL))

    assert [r["round"] for r in cb.results] == [0, 1, 2, 3, 4]
    assert len(probe.round_starts) == 5
    scope = list(cb._params)
    total = sum(cb._params[n].numel() for n in scope)
    for start in probe.round_starts[1:]:
        r, masks = start["round"], start["masks"]
        # exact count pruned
        assert sum(int((~m).sum()) for m in masks.values()) == round(cb.sparsities[r] * total)
        # rewind exactness: every parameter equals theta0 (times the mask inside the scope), bit for bit
        for n, p in start["params"].items():
            expected = probe.theta0[n] * masks[n] if n in masks else probe.theta0[n]
            assert torch.equal(p, expected), (r, n)
        # fresh optimizer and LR schedule (step counter back to 0) in every round
        assert start["opt_state"] == 0
        assert start["lr"] == pytest.approx(model.hparams.lr)
        assert start["sched_epoch"] == 0
        # the mask equals torch.nn.utils.prune.global_unstructured on the trained weights (independent oracle)
        prev = probe.round_starts[r - 1]["masks"]
        trained = probe.trained[r - 1]
        mods = []
        for n in scope:
            lin = torch.nn.Linear(1, 1, bias=False)
            lin.weight = torch.nn.Parameter(trained[n].clone())
            if prev is not None:
                prune.custom_from_mask(lin, "weight", prev[n])
            mods.append(lin)
        already = 0 if prev is None else sum(int((~m).sum()) for m in prev.values())
        prune.global_unstructured(
            [(m, "weight") for m in mods], prune.L1Unstructured, amount=round(cb.sparsities[r] * total) - already
        )
        for n, lin in zip(scope, mods):
            assert torch.equal(masks[n], lin.weight_mask.bool()), (r, n)
    assert len({s["opt_id"] for s in probe.round_starts}) == 5  # a new optimizer object each round
    assert probe.zero_violations == 0 and probe.steps_checked == 20


def test_tickets_and_summary_written(tmp_path):
    cb = make_cb(tmp_path, target_sparsity=0.75, rate=0.5, plot=True)
    trainer([cb], tmp_path).fit(ToyClassifier(), ToyDataModule(**SMALL))
    d = tmp_path / "tickets"
    assert sorted(p.name for p in d.glob("round-*.safetensors")) == [
        "round-00.safetensors",
        "round-01.safetensors",
        "round-02.safetensors",
    ]
    summary = json.loads((d / "summary.json").read_text())
    assert [r["sparsity"] for r in summary["rounds"]] == pytest.approx([0.0, 0.5, 0.75])
    assert summary["finished"] is True
    dense = summary["dense_score"]
    winners = [r for r in summary["rounds"] if r["sparsity"] > 0 and r["score"] >= 0.99 * dense]
    best = summary["best_relaxed_ticket"]
    assert (best is None) == (not winners)
    if winners:
        assert best["sparsity"] == max(r["sparsity"] for r in winners)
    t = Ticket.load(d / "round-02.safetensors")
    assert t.sparsity == pytest.approx(0.75, abs=1e-4)
    assert t.metadata["round"] == 2 and t.metadata["monitor"] == "val/acc"
    assert t.metadata["score"] == pytest.approx(summary["rounds"][2]["score"])
    assert t.metadata["rewind"] == "init" and t.metadata["scope"]["name"] == "encoder"
    assert t.metadata["model_class"].endswith("ToyClassifier")
    assert (d / "summary.png").stat().st_size > 1000
    # tickets agree with the masks of the finished run
    for n, m in cb.masks.items():
        assert torch.equal(t.masks[n], m)


def test_masked_weights_zero_in_checkpoints_and_plain_state_dict(tmp_path):
    cb = make_cb(tmp_path, target_sparsity=0.5, rate=0.5)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1)
    trainer([cb, ckpt], tmp_path, enable_checkpointing=True).fit(ToyClassifier(), ToyDataModule(**SMALL))
    sd = torch.load(tmp_path / "ckpt" / "epoch=1-step=8.ckpt", weights_only=False)
    state = sd["state_dict"]
    assert not any("_orig" in k or "_mask" in k for k in state)  # plain keys, no reparametrisation
    masks = cb.masks
    for n, m in masks.items():
        assert bool((state[n][~m] == 0).all())
    # loads into a plain model without the library's callback
    plain = ToyClassifier()
    plain.load_state_dict(state)
    cb_state = next(v for k, v in sd["callbacks"].items() if "LotteryTicketCallback" in k)
    assert all(v["bits"].dtype == torch.uint8 for v in cb_state["masks"].values())  # bit-packed


def _final(cb, model):
    return (
        {n: p.detach().clone() for n, p in model.named_parameters()},
        {n: m.clone() for n, m in (cb.masks or {}).items()},
        [r["score"] for r in cb.results],
    )


@pytest.mark.parametrize("resume_epoch", [0, 1, 2, 5])
def test_resume_is_bit_identical(tmp_path, resume_epoch):
    """Rounds of 2 epochs: epoch 0 = mid round 0, 1 = round boundary, 2 = mid round 1, 5 = boundary (round 2)."""
    kw = dict(target_sparsity=0.875, rate=0.5, epochs_per_round=2)
    L.seed_everything(0)
    cb = make_cb(tmp_path / "a", **kw)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1, filename="{epoch}")
    model = ToyClassifier(scheduler="linear")
    trainer([cb, ckpt], tmp_path, enable_checkpointing=True, max_epochs=8).fit(model, ToyDataModule(**SMALL))
    ref = _final(cb, model)

    L.seed_everything(0)
    cb2 = make_cb(tmp_path / "a", **kw)  # same ticket_dir: resuming is allowed
    model2 = ToyClassifier(scheduler="linear")
    trainer([cb2], tmp_path, max_epochs=8).fit(
        model2, ToyDataModule(**SMALL), ckpt_path=tmp_path / "ckpt" / f"epoch={resume_epoch}.ckpt"
    )
    got = _final(cb2, model2)
    assert ref[2] == got[2]
    assert ref[1].keys() == got[1].keys() and all(torch.equal(ref[1][n], got[1][n]) for n in ref[1])
    assert all(torch.equal(ref[0][n], got[0][n]) for n in ref[0])


def test_steps_per_round_with_validation_at_round_end(tmp_path):
    cb = make_cb(tmp_path, target_sparsity=0.5, schedule="linear", rate=0.25, steps_per_round=6)
    tr = trainer([cb], tmp_path, max_steps=100, val_check_interval=6, check_val_every_n_epoch=None)
    tr.fit(ToyClassifier(), ToyDataModule(**SMALL))
    assert [r["step"] for r in cb.results] == [6, 12, 18]
    assert [r["sparsity"] for r in cb.results] == pytest.approx([0.0, 0.25, 0.5])
    assert tr.global_step == 18  # IMP ends after the last round


def test_steps_per_round_without_validation_at_round_end_is_an_error(tmp_path):
    cb = make_cb(tmp_path, target_sparsity=0.5, rate=0.25, steps_per_round=6)
    probe = Probe(cb)
    with pytest.raises(ValueError, match=r"round 1 ends at step 6.*no validation.*val_check_interval=6"):
        trainer([cb, probe], tmp_path, max_steps=100).fit(ToyClassifier(), ToyDataModule(**SMALL))
    assert probe.steps_checked == 0  # refused before the first step, not after a wasted round
    cb = make_cb(tmp_path / "b", target_sparsity=0.5, rate=0.25, steps_per_round=6)
    with pytest.raises(ValueError, match=r"not a multiple of val_check_interval=4"):
        trainer([cb], tmp_path, max_steps=100, val_check_interval=4, check_val_every_n_epoch=None).fit(
            ToyClassifier(), ToyDataModule(**SMALL)
        )


def test_late_rewinding_to_step_k(tmp_path):
    cb = make_cb(tmp_path, target_sparsity=0.5, rate=0.5, epochs_per_round=2, rewind="step:3")

    class Capture(Callback):
        at3 = None

        def on_train_batch_end(self, trainer, pl_module, *args):
            if trainer.global_step == 3:
                self.at3 = {n: p.detach().clone() for n, p in pl_module.named_parameters()}

    cap, probe = Capture(), Probe(cb)
    trainer([cb, cap, probe], tmp_path).fit(ToyClassifier(), ToyDataModule(**SMALL))
    start = probe.round_starts[1]
    for n, p in start["params"].items():
        expected = cap.at3[n] * start["masks"][n] if n in start["masks"] else cap.at3[n]
        assert torch.equal(p, expected), n
    assert not torch.equal(cap.at3["head.weight"], probe.theta0["head.weight"])


def test_rewind_head_false_keeps_trained_head_and_rewind_none(tmp_path):
    cb = make_cb(tmp_path, target_sparsity=0.5, rate=0.5, rewind_head=False)
    probe = Probe(cb)
    trainer([cb, probe], tmp_path).fit(ToyClassifier(), ToyDataModule(**SMALL))
    start = probe.round_starts[1]
    assert not torch.equal(start["params"]["head.weight"], probe.theta0["head.weight"])
    n = "encoder.layer.0.intermediate.dense.weight"
    assert torch.equal(start["params"][n], probe.theta0[n] * start["masks"][n])

    cb = make_cb(tmp_path / "none", target_sparsity=0.5, rate=0.5, rewind="none", reset_optimizer=False)
    probe = Probe(cb)
    trainer([cb, probe], tmp_path).fit(ToyClassifier(), ToyDataModule(**SMALL))
    start = probe.round_starts[1]
    assert not torch.equal(start["params"][n], probe.theta0[n] * start["masks"][n])
    assert start["opt_state"] > 0  # optimizer state kept when reset_optimizer=False


def test_random_and_layerwise_methods(tmp_path):
    cb = make_cb(tmp_path, target_sparsity=0.6, schedule=[0.3, 0.6], method="random", seed=3)
    trainer([cb], tmp_path).fit(ToyClassifier(), ToyDataModule(**SMALL))
    total = sum(p.numel() for p in cb._params.values())
    assert sum(int((~m).sum()) for m in cb.masks.values()) == round(0.6 * total)
    cb2 = make_cb(tmp_path / "lw", target_sparsity=0.6, schedule=[0.3, 0.6], granularity="layerwise")
    trainer([cb2], tmp_path).fit(ToyClassifier(), ToyDataModule(**SMALL))
    for m in cb2.masks.values():
        assert int((~m).sum()) == round(0.6 * m.numel())


class LazyToy(ToyClassifier):
    """Builds its encoder in configure_model (as large models do): the scope must still see it."""

    def __init__(self):
        super().__init__()
        del self.encoder

    def configure_model(self):
        if not hasattr(self, "encoder"):
            from lightning_tickets.toy import ToyBlock

            self.encoder = torch.nn.Module()
            self.encoder.layer = torch.nn.ModuleList([ToyBlock(64, 128) for _ in range(2)])


def test_layers_built_in_configure_model_are_pruned(tmp_path):
    cb = make_cb(tmp_path, target_sparsity=0.5, rate=0.5)
    trainer([cb], tmp_path).fit(LazyToy(), ToyDataModule(**SMALL))
    assert any(n.startswith("encoder.layer.1.") for n in cb.masks)
    assert cb.results[-1]["sparsity"] == pytest.approx(0.5)


def test_fixed_ticket_training_with_remap(tmp_path):
    cb = make_cb(tmp_path, target_sparsity=0.75, rate=0.5)
    trainer([cb], tmp_path).fit(ToyClassifier(), ToyDataModule(**SMALL))
    ticket_path = tmp_path / "tickets" / "round-02.safetensors"

    # rename parameters: the ticket's names get a prefix in the target model
    class Wrapped(ToyClassifier):
        pass

    fixed = LotteryTicketCallback(
        ticket=str(ticket_path), monitor="val/acc", ticket_dir=str(tmp_path / "fixed"), plot=False
    )
    probe = Probe(fixed)
    trainer([fixed, probe], tmp_path, max_epochs=3).fit(Wrapped(), ToyDataModule(**SMALL))
    assert probe.zero_violations == 0 and probe.steps_checked == 12
    assert fixed.results[0]["sparsity"] == pytest.approx(0.75, abs=1e-4)
    t = Ticket.load(ticket_path)
    assert all(torch.equal(fixed.masks[n], t.masks[n]) for n in t.masks)


def test_monitor_never_logged_names_logged_metrics(tmp_path):
    cb = make_cb(tmp_path, monitor="val/accuracy")
    with pytest.raises(KeyError, match=r"monitor='val/accuracy' was never logged; logged metrics: .*'val/acc'"):
        trainer([cb], tmp_path).fit(ToyClassifier(), ToyDataModule(**SMALL))


def test_too_few_epochs_or_steps_fail_at_setup_with_number_needed(tmp_path):
    cb = make_cb(tmp_path, target_sparsity=0.9, rate=0.5, epochs_per_round=2)  # 5 rounds
    with pytest.raises(ValueError, match=r"max_epochs=9.*cannot fit 5 rounds.*set max_epochs >= 10"):
        trainer([cb], tmp_path, max_epochs=9).fit(ToyClassifier(), ToyDataModule(**SMALL))
    assert not (tmp_path / "tickets").exists()  # nothing written
    cb = make_cb(tmp_path, target_sparsity=0.75, rate=0.5, steps_per_round=10)
    with pytest.raises(ValueError, match=r"max_steps=20.*set max_steps >= 30"):
        trainer([cb], tmp_path, max_steps=20).fit(ToyClassifier(), ToyDataModule(**SMALL))


def test_non_empty_ticket_dir_refused_unless_overwrite(tmp_path):
    d = tmp_path / "tickets"
    d.mkdir()
    (d / "round-00.safetensors").write_bytes(b"old")
    (d / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match=r"is not empty.*overwrite=True"):
        trainer([make_cb(tmp_path, target_sparsity=0.5, rate=0.5)], tmp_path).fit(
            ToyClassifier(), ToyDataModule(**SMALL)
        )
    assert (d / "round-00.safetensors").read_bytes() == b"old"
    trainer([make_cb(tmp_path, target_sparsity=0.5, rate=0.5, overwrite=True)], tmp_path).fit(
        ToyClassifier(), ToyDataModule(**SMALL)
    )
    assert (d / "notes.txt").read_text() == "keep me"  # only our own files are replaced
    Ticket.load(d / "round-00.safetensors")


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (dict(target_sparsity=1.0), r"target_sparsity=1.0 is outside \[0, 1\)"),
        (dict(rate=1.5), r"rate=1.5 is outside \(0, 1\)"),
        (dict(schedule=[0.5, 0.4], target_sparsity=None), "not strictly increasing"),
        (dict(epochs_per_round=1, steps_per_round=5), "exactly one of epochs_per_round and steps_per_round"),
        (dict(epochs_per_round=None), "exactly one of epochs_per_round and steps_per_round"),
        (dict(epochs_per_round=0), "epochs_per_round=0 must be a positive integer"),
        (dict(rewind="epoch-3"), r"rewind='epoch-3' is malformed"),
        (dict(rewind="epoch:1"), r"points past round 0"),
        (dict(scope="decoder"), r"scope='decoder' is not a preset"),
        (dict(granularity="rows"), "granularity='rows' is unknown"),
        (dict(method="snip"), "method='snip' is unknown"),
        (dict(mode="up"), "mode='up' is unknown"),
        (dict(tolerance=1.5), r"tolerance=1.5 is outside"),
    ],
)
def test_bad_arguments(kw, match):
    base = dict(target_sparsity=0.5, epochs_per_round=1)
    base.update(kw)
    if base.get("epochs_per_round") is None:
        base.pop("epochs_per_round")
    with pytest.raises(ValueError, match=match):
        LotteryTicketCallback(**base)


def test_scope_matching_nothing_fails_before_training(tmp_path):
    cb = make_cb(tmp_path, scope={"include": ["nothing-here"]})
    with pytest.raises(ValueError, match=r"matches no parameter.*embeddings.weight"):
        trainer([cb], tmp_path).fit(ToyClassifier(), ToyDataModule(**SMALL))


def test_unsupported_strategy_error():
    from types import SimpleNamespace

    from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy

    cb = LotteryTicketCallback(0.5, epochs_per_round=1)
    for cls in (FSDPStrategy, DeepSpeedStrategy):
        fake = SimpleNamespace(strategy=cls.__new__(cls))
        with pytest.raises(RuntimeError, match=rf"does not support the {cls.__name__} strategy yet"):
            cb.setup(fake, None, "fit")


def test_checkpoint_from_other_configuration_refused(tmp_path):
    cb = make_cb(tmp_path, target_sparsity=0.5, rate=0.5)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1, filename="{epoch}")
    trainer([cb, ckpt], tmp_path, enable_checkpointing=True).fit(ToyClassifier(), ToyDataModule(**SMALL))
    other = make_cb(tmp_path, target_sparsity=0.75, rate=0.5)
    with pytest.raises(ValueError, match="resume with the same settings"):
        trainer([other], tmp_path).fit(
            ToyClassifier(), ToyDataModule(**SMALL), ckpt_path=tmp_path / "ckpt" / "epoch=0.ckpt"
        )


def test_progress_bar_and_loggers_get_round_and_sparsity(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    cb = make_cb(tmp_path, target_sparsity=0.5, rate=0.5)
    tr = L.Trainer(
        accelerator="cpu",
        max_epochs=5,
        callbacks=[cb],
        logger=CSVLogger(tmp_path, name="csv"),
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        enable_checkpointing=False,
    )
    tr.fit(ToyClassifier(), ToyDataModule(**SMALL))
    assert tr.progress_bar_metrics["tickets/sparsity"] == pytest.approx(0.5)
    text = next((tmp_path / "csv").rglob("metrics.csv")).read_text()
    assert "tickets/sparsity" in text.splitlines()[0] and "tickets/round" in text.splitlines()[0]


def test_table_printed_at_end(tmp_path, capsys):
    cb = make_cb(tmp_path, target_sparsity=0.5, rate=0.5)
    trainer([cb], tmp_path).fit(ToyClassifier(), ToyDataModule(**SMALL))
    out = capsys.readouterr().out
    assert "round  sparsity" in out and "50.00%" in out and "summary.json" in out


def test_snapshot_is_a_true_copy(tmp_path):
    cb = make_cb(tmp_path, target_sparsity=0.5, rate=0.5)
    model = ToyClassifier()
    trainer([cb], tmp_path).fit(model, ToyDataModule(**SMALL))
    for n, p in model.named_parameters():
        assert cb.state.snapshot[n].untyped_storage().data_ptr() != p.untyped_storage().data_ptr()
    assert copy.deepcopy(cb.state_dict())["snapshot"] is not None


def test_fixed_ticket_that_does_not_fit_the_model(tmp_path):
    from lightning_tickets import TicketError

    masks = {"encoder.layer.0.intermediate.dense.weight": torch.ones(3, 3, dtype=torch.bool)}  # wrong shape
    Ticket(masks).save(tmp_path / "bad_shape.safetensors")
    cb = LotteryTicketCallback(ticket=str(tmp_path / "bad_shape.safetensors"), ticket_dir=str(tmp_path / "t"))
    with pytest.raises(TicketError, match=r"encoder.layer.0.intermediate.dense.weight.*shape"):
        trainer([cb], tmp_path).fit(ToyClassifier(), ToyDataModule(**SMALL))
    Ticket({"model.encoder.x.weight": torch.ones(2, 2, dtype=torch.bool)}).save(tmp_path / "bad_name.safetensors")
    cb = LotteryTicketCallback(ticket=str(tmp_path / "bad_name.safetensors"), ticket_dir=str(tmp_path / "t"))
    with pytest.raises(TicketError, match=r"model.encoder.x.weight"):
        trainer([cb], tmp_path).fit(ToyClassifier(), ToyDataModule(**SMALL))
    (tmp_path / "truncated.safetensors").write_bytes((tmp_path / "bad_name.safetensors").read_bytes()[:40])
    cb = LotteryTicketCallback(ticket=str(tmp_path / "truncated.safetensors"), ticket_dir=str(tmp_path / "t"))
    with pytest.raises(TicketError, match=r"truncated.safetensors"):
        trainer([cb], tmp_path).fit(ToyClassifier(), ToyDataModule(**SMALL))


def test_late_rewind_epoch_k_with_steps_per_round(tmp_path):
    # 4 batches per epoch; rounds of 8 steps; rewind to the weights after epoch 1 (= step 4) of round 0
    cb = make_cb(tmp_path, target_sparsity=0.5, rate=0.5, steps_per_round=8, rewind="epoch:1")

    class Capture(Callback):
        at4 = None

        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.global_step == 4:
                self.at4 = {n: p.detach().clone() for n, p in pl_module.named_parameters()}

    cap, probe = Capture(), Probe(cb)
    trainer([cb, cap, probe], tmp_path, max_steps=16, val_check_interval=8, check_val_every_n_epoch=None).fit(
        ToyClassifier(), ToyDataModule(**SMALL)
    )
    start = probe.round_starts[1]
    n = "encoder.layer.0.intermediate.dense.weight"
    assert torch.equal(start["params"][n], cap.at4[n] * start["masks"][n])


def test_late_rewind_past_round_zero_refused_before_training(tmp_path):
    cb = make_cb(tmp_path, target_sparsity=0.5, rate=0.5, epochs_per_round=1, rewind="step:4")  # 4 steps/epoch
    probe = Probe(cb)
    with pytest.raises(ValueError, match=r"rewind='step:4' points past round 0, which has 4 optimizer steps"):
        trainer([cb, probe], tmp_path).fit(ToyClassifier(), ToyDataModule(**SMALL))
    assert probe.steps_checked == 0


def test_validation_cadence_checked_before_training_in_epoch_mode(tmp_path):
    cb = make_cb(tmp_path, target_sparsity=0.5, rate=0.5, epochs_per_round=3)
    probe = Probe(cb)
    with pytest.raises(ValueError, match=r"check_val_every_n_epoch=2 does not divide epochs_per_round=3"):
        trainer([cb, probe], tmp_path, check_val_every_n_epoch=2).fit(ToyClassifier(), ToyDataModule(**SMALL))
    assert probe.steps_checked == 0


def test_resume_fixed_ticket_run(tmp_path):
    cb = make_cb(tmp_path, target_sparsity=0.5, rate=0.5)
    trainer([cb], tmp_path).fit(ToyClassifier(), ToyDataModule(**SMALL))
    path = str(tmp_path / "tickets" / "round-01.safetensors")
    fixed = LotteryTicketCallback(ticket=path, ticket_dir=str(tmp_path / "f"), plot=False)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "fck", save_top_k=-1, every_n_epochs=1, filename="{epoch}")
    m1 = ToyClassifier()
    trainer([fixed, ckpt], tmp_path, max_epochs=3, enable_checkpointing=True).fit(m1, ToyDataModule(**SMALL))
    again = LotteryTicketCallback(ticket=path, ticket_dir=str(tmp_path / "f"), plot=False)
    m2 = ToyClassifier()
    trainer([again], tmp_path, max_epochs=3).fit(
        m2, ToyDataModule(**SMALL), ckpt_path=tmp_path / "fck" / "epoch=0.ckpt"
    )
    assert all(torch.equal(again.masks[n], fixed.masks[n]) for n in fixed.masks)
    assert all(torch.equal(a, b) for a, b in zip(m1.parameters(), m2.parameters()))
