"""Direct tests of :mod:`lightning_tickets.rewind`: rewind points, true-copy snapshots, restore, optimizer reset."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from lightning_tickets.rewind import RewindPoint, reset_optimizers, restore_snapshot, take_snapshot
from lightning_tickets.toy import ToyClassifier, ToyDataModule


# -- RewindPoint.parse
@pytest.mark.parametrize(
    ("spec", "kind", "k", "text"),
    [
        ("init", "init", 0, "init"),
        ("none", "none", 0, "none"),
        ("step:5", "step", 5, "step:5"),
        ("epoch:2", "epoch", 2, "epoch:2"),
        (" Step:12 ", "step", 12, "step:12"),
        ("EPOCH:3", "epoch", 3, "epoch:3"),
        ("step:0", "init", 0, "init"),  # K = 0 is the weights at fit start
        ("epoch:0", "init", 0, "init"),
        ("step:007", "step", 7, "step:7"),
    ],
)
def test_parse_valid(spec, kind, k, text):
    point = RewindPoint.parse(spec)
    assert (point.kind, point.k) == (kind, k)
    assert str(point) == text
    assert RewindPoint.parse(str(point)) == point


@pytest.mark.parametrize("spec", ["", "begin", "step", "step:", "step:-1", "epoch:1.5", "step 5", "step:5:1", "iter:3"])
def test_parse_malformed_names_value_and_accepted_forms(spec):
    with pytest.raises(ValueError) as err:
        RewindPoint.parse(spec)
    msg = str(err.value)
    assert f"rewind={spec!r} is malformed" in msg
    for form in ("'init'", "'step:K'", "'epoch:K'", "'none'"):
        assert form in msg


@pytest.mark.parametrize("spec", [5, None, 1.0])
def test_parse_non_string(spec):
    with pytest.raises(ValueError, match=rf"rewind={spec!r} must be a string: 'init', 'none', 'step:K' or 'epoch:K'"):
        RewindPoint.parse(spec)


def test_rewind_point_is_frozen():
    point = RewindPoint.parse("step:3")
    with pytest.raises(AttributeError):
        point.k = 4  # type: ignore[misc]


# -- take_snapshot
def _params():
    g = torch.Generator().manual_seed(0)
    return {
        "w": torch.randn(4, 3, generator=g),
        "half": torch.randn(5, generator=g).to(torch.float16),
        "bf": torch.randn(2, 2, generator=g).to(torch.bfloat16),
        "count": torch.arange(6, dtype=torch.int64).reshape(2, 3),
        "view": torch.randn(3, 4, generator=g).t(),  # non-contiguous
    }


def test_snapshot_is_a_true_copy_with_dtype_and_values_kept():
    params = _params()
    before = {n: p.clone() for n, p in params.items()}
    snap = take_snapshot(params)
    assert list(snap) == list(params)
    for n, p in params.items():
        s = snap[n]
        assert s.dtype == p.dtype and s.shape == p.shape and s.device.type == "cpu"
        assert torch.equal(s, p)
        assert s.untyped_storage().data_ptr() != p.untyped_storage().data_ptr()
    with torch.no_grad():
        for p in params.values():
            p.add_(1)
    for n in params:
        assert torch.equal(snap[n], before[n]), n  # changing the live tensor leaves the snapshot alone
        assert not torch.equal(snap[n], params[n])


def test_snapshot_of_parameters_needs_no_grad_and_has_none():
    lin = torch.nn.Linear(3, 2)
    snap = take_snapshot(dict(lin.named_parameters()))
    assert all(not t.requires_grad and not isinstance(t, torch.nn.Parameter) for t in snap.values())


def test_snapshot_device_argument_is_honoured():
    snap = take_snapshot({"w": torch.ones(2, 3)}, device="meta")
    assert snap["w"].device.type == "meta" and snap["w"].shape == (2, 3)


# -- restore_snapshot
def test_restore_copies_back_in_place_and_leaves_extra_names():
    params = _params()
    snap = take_snapshot(params)
    objects = {n: (p, p.data_ptr()) for n, p in params.items()}
    extra = torch.full((2,), 7.0)
    with torch.no_grad():
        for p in params.values():
            p.mul_(0)
    live = {**params, "extra": extra}
    restore_snapshot(live, snap)
    for n, (obj, ptr) in objects.items():
        assert live[n] is obj and obj.data_ptr() == ptr  # in place: same tensor, same storage
        assert torch.equal(obj, snap[n])
    assert extra.tolist() == [7.0, 7.0]


def test_restore_into_module_parameters():
    lin = torch.nn.Linear(3, 2)
    snap = take_snapshot(dict(lin.named_parameters()))
    with torch.no_grad():
        lin.weight.fill_(5)
        lin.bias.fill_(5)
    restore_snapshot(dict(lin.named_parameters()), snap)
    assert torch.equal(lin.weight, snap["weight"]) and torch.equal(lin.bias, snap["bias"])
    assert lin.weight.requires_grad


def test_restore_missing_name_is_a_key_error_naming_it():
    with pytest.raises(KeyError, match="snapshot tensors not found in the model: \\['gone'\\]"):
        restore_snapshot({"w": torch.zeros(2)}, {"w": torch.ones(2), "gone": torch.ones(1)})


def test_restore_shape_mismatch_names_tensor_and_shapes():
    with pytest.raises(ValueError, match=r"snapshot tensor 'w' has shape \(3,\), model has \(2,\)"):
        restore_snapshot({"w": torch.zeros(2)}, {"w": torch.ones(3)})


def test_restore_shape_mismatch_changes_nothing():
    live = {"a": torch.zeros(2), "b": torch.zeros(2)}
    with pytest.raises(ValueError):
        restore_snapshot(live, {"a": torch.ones(2), "b": torch.ones(3)})
    assert live["a"].tolist() == [0.0, 0.0]


# -- reset_optimizers on a real Trainer
class _ResetAt(L.Callback):
    """Calls reset_optimizers at the start of batch ``at`` and records what the optimizer looked like."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.seen: dict = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step != self.at:
            return
        old_opt = trainer.optimizers[0]
        old_sched = trainer.lr_scheduler_configs[0].scheduler
        self.seen.update(
            old_opt=old_opt,
            old_state=len(old_opt.state),
            old_sched_step=old_sched.last_epoch,
            old_lr=old_opt.param_groups[0]["lr"],
        )
        reset_optimizers(trainer)
        new_opt = trainer.optimizers[0]
        new_sched = trainer.lr_scheduler_configs[0].scheduler
        self.seen.update(
            new_opt=new_opt,
            new_state=len(new_opt.state),
            new_sched=new_sched,
            new_sched_step=new_sched.last_epoch,
            new_lr=new_opt.param_groups[0]["lr"],
            sched_opt=new_sched.optimizer,
            params_ok={id(p) for g in new_opt.param_groups for p in g["params"]}
            == {id(p) for p in pl_module.parameters()},
        )


def test_reset_optimizers_gives_fresh_optimizer_and_scheduler(tmp_path):
    torch.manual_seed(0)
    model = ToyClassifier(in_features=8, hidden=16, ffn=16, num_layers=1, scheduler="linear", lr=1e-2)
    cb = _ResetAt(at=3)
    trainer = L.Trainer(
        max_steps=6,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[cb],
        default_root_dir=tmp_path,
    )
    trainer.fit(model, ToyDataModule(num_samples=128, in_features=8, batch_size=16))
    s = cb.seen
    assert s["old_state"] > 0 and s["old_sched_step"] == 3  # AdamW state and 3 scheduler steps before the reset
    assert s["old_lr"] == pytest.approx(1e-2 * (1 - 3 / 6))
    assert s["new_opt"] is not s["old_opt"]
    assert s["new_state"] == 0
    assert s["new_sched_step"] == 0 and s["new_lr"] == pytest.approx(1e-2)
    assert s["sched_opt"] is s["new_opt"]
    assert s["params_ok"]
    # Lightning trained on with the new objects: 3 more steps on the new optimizer and scheduler
    assert trainer.optimizers[0] is s["new_opt"] and len(s["new_opt"].state) > 0
    assert trainer.lr_scheduler_configs[0].scheduler is s["new_sched"]
    assert s["new_sched"].last_epoch == 3
    step = next(iter(s["new_opt"].state.values()))["step"]
    assert int(step) == 3
