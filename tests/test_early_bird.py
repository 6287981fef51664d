"""Early-bird rounds (issue 18): the distance against hand-computed oracles, the decision rule, rounds that end early
on a converged toy run and do not on a non-converging one (steps / epochs mode, late rewinding, no monitor), the
one-shot ticket, and the history surviving a checkpoint."""

from __future__ import annotations

import json
import warnings

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_tickets import LotteryTicketCallback, Ticket
from lightning_tickets.bits import pack_bits
from lightning_tickets.early_bird import EarlyBird, EarlyBirdTracker, hamming_distance, packed_distance
from lightning_tickets.state import RunState, state_from_dict, state_to_dict
from lightning_tickets.toy import ToyClassifier, ToyDataModule

DATA = {"num_samples": 256, "batch_size": 32}  # 8 batches per epoch


def _trainer(callbacks, tmp_path, **kw):
    return L.Trainer(
        accelerator="cpu", devices=1, callbacks=callbacks, logger=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path, deterministic=True,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks), **kw,
    )  # fmt: skip


def _cb(tmp_path, early_bird, **kw):
    kw.setdefault("target_sparsity", 0.75)
    kw.setdefault("rate", 0.5)  # rounds at 0, 50 %, 75 %
    kw.setdefault("monitor", "val/acc")
    if "epochs_per_round" not in kw:
        kw.setdefault("steps_per_round", 40)
    return LotteryTicketCallback(ticket_dir=str(tmp_path / "tickets"), plot=False, early_bird=early_bird, **kw)


def _steps_fit(cb, tmp_path, lr, val_every=5, ckpt_path=None, **kw):
    tr = _trainer([cb, *kw.pop("callbacks", [])], tmp_path, max_steps=200, val_check_interval=val_every,
                  check_val_every_n_epoch=None, **kw)  # fmt: skip
    L.seed_everything(0)
    tr.fit(ToyClassifier(lr=lr), ToyDataModule(**DATA), ckpt_path=ckpt_path)
    return tr


# --------------------------------------------------------------------------------------------- distance (oracles)
def test_hamming_distance_matches_a_hand_count():
    a = {"x": torch.tensor([[1, 0, 1], [1, 1, 0]], dtype=torch.bool), "y": torch.tensor([1, 0, 0, 1, 1], dtype=bool)}
    b = {"x": torch.tensor([[1, 1, 1], [0, 1, 0]], dtype=torch.bool), "y": torch.tensor([1, 0, 1, 1, 0], dtype=bool)}
    # x differs at (0,1) and (1,0); y at 2 and 4: 4 of 11 weights
    assert hamming_distance(a, b) == pytest.approx(4 / 11)
    assert hamming_distance(a, a) == 0.0
    assert hamming_distance(a, {n: ~m for n, m in a.items()}) == 1.0


def test_packed_distance_random_masks_against_elementwise_count():
    g = torch.Generator().manual_seed(3)
    for numel in (1, 7, 8, 9, 1001):  # padding bits of the last byte never count
        a, b = torch.rand(numel, generator=g) > 0.5, torch.rand(numel, generator=g) > 0.3
        expected = sum(int(x != y) for x, y in zip(a.tolist(), b.tolist()))
        pa = {"w": {"shape": [numel], "bits": pack_bits(a)}}
        pb = {"w": {"shape": [numel], "bits": pack_bits(b)}}
        assert packed_distance(pa, pb) == (expected, numel)


def test_popcount_of_every_byte_value():
    from lightning_tickets.early_bird import _popcount

    for v in range(256):
        assert _popcount(torch.tensor([v], dtype=torch.uint8)) == bin(v).count("1"), v
    assert _popcount(torch.arange(256, dtype=torch.uint8)) == 8 * 128


def test_packed_distance_refuses_different_masks():
    a = {"w": {"shape": [3], "bits": pack_bits(torch.ones(3, dtype=torch.bool))}}
    with pytest.raises(ValueError, match="different parameters"):
        packed_distance(a, {"v": a["w"]})
    with pytest.raises(ValueError, match=r"shape \[3\] in one mask and \[1, 3\]"):
        packed_distance(a, {"w": {"shape": [1, 3], "bits": a["w"]["bits"]}})


# --------------------------------------------------------------------------------------------- decision rule
class _ScriptedStore:
    """A MaskStore stand-in whose ``compute`` returns the next scripted mask (records its arguments)."""

    def __init__(self, masks):
        self.masks, self.calls = list(masks), []

    def compute(self, masks, target, final):
        self.calls.append((target, final))
        return {"w": torch.tensor(self.masks.pop(0), dtype=torch.bool)}

    def count_sum(self, counts):
        return counts


def test_tracker_distances_and_window_rule():
    # 10 weights; distances to the previous check: -, 3/10, 1/10, 0, 1/10, 0, 0
    a = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    b = [0, 0, 1, 1, 1, 1, 0, 0, 0, 0]  # differs from a at 0, 1, 5
    c = [0, 0, 1, 1, 1, 1, 0, 0, 0, 1]  # from b at 9
    d = [1, 0, 1, 1, 1, 1, 0, 0, 0, 1]  # from c at 0
    script = [a, b, c, c, d, d, d]
    tracker = EarlyBirdTracker(EarlyBird(every=1, threshold=0.15, window=3))
    store, st = _ScriptedStore(script), RunState()
    got = []
    for step in range(1, 8):
        got.append((tracker.check(store, st, 0.5, False, step), st.early_bird_converged))
    # below 0.15 from the 3rd check on: 1/10, 0, 1/10 -> the 5th check completes a window of 3
    assert got == [(None, False), (0.3, False), (0.1, False), (0.0, False), (0.1, True), (0.0, True), (0.0, True)]
    assert store.calls == [(0.5, False)] * 7
    assert st.early_bird_checks[1] == {"step": 2, "distance": 0.3}


def test_tracker_a_far_check_restarts_the_window_and_not_ready_defers():
    same, other = [1, 1, 0, 0], [0, 0, 1, 1]
    tracker = EarlyBirdTracker(EarlyBird(every=1, threshold=0.3, window=2))
    store, st = _ScriptedStore([same, same, other, other, other, other]), RunState()
    flags = [(tracker.check(store, st, 0.5, True, s, ready=s != 5), st.early_bird_converged) for s in range(1, 7)]
    # distances -, 0, 1, 0, 0 (window full but not ready: late rewind point not taken), 0 -> converged
    assert flags == [(None, False), (0.0, False), (1.0, False), (0.0, False), (0.0, False), (0.0, True)]


def test_broadcast_decides_for_every_rank():
    """The distance and the decision recorded are rank 0's (what ``broadcast`` returns), not this rank's."""
    tracker = EarlyBirdTracker(EarlyBird(every=1, threshold=0.3, window=1))
    store, st = _ScriptedStore([[1, 0], [1, 0]]), RunState()
    tracker.check(store, st, 0.5, False, 1, broadcast=lambda obj: obj)
    assert tracker.check(store, st, 0.5, False, 2, broadcast=lambda obj: (0.5, False)) == 0.5
    assert not st.early_bird_converged and st.early_bird_checks[-1] == {"step": 2, "distance": 0.5}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"every": 0}, r"every=0\) must be a positive integer"),
        ({"window": 1.5}, r"window=1.5\) must be a positive integer"),
        ({"threshold": 0.0}, r"threshold=0.0\) must lie in \(0, 1\)"),
        ({"threshold": 1}, r"threshold=1\) must lie in \(0, 1\)"),
        ({"one_shot": "yes"}, r"one_shot='yes'\) must be True or False"),
    ],
)
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EarlyBird(**kwargs)


def test_dict_settings_and_random_method():
    assert EarlyBird.parse({"every": 7}) == EarlyBird(every=7)
    with pytest.raises(ValueError, match=r"unknown keys \['evry'\]"):
        EarlyBird.parse({"evry": 7})
    with pytest.raises(ValueError, match="early_bird needs method='magnitude'"):
        LotteryTicketCallback(0.5, epochs_per_round=1, method="random", early_bird={"every": 5})
    cb = LotteryTicketCallback(0.9, rate=0.5, epochs_per_round=1, early_bird={"every": 5, "one_shot": True})
    assert cb.early_bird == EarlyBird(every=5, one_shot=True) and cb.sparsities == [0.0, 0.9]


def test_state_round_trips_the_history():
    st = RunState()
    EarlyBirdTracker(EarlyBird(every=1, window=1)).check(_ScriptedStore([[1, 0, 1]]), st, 0.5, False, 4)
    back = state_from_dict(state_to_dict(st))
    assert back.early_bird_checks == [{"step": 4, "distance": None}] and not back.early_bird_converged
    assert back.early_bird_prev["w"]["shape"] == [3]
    assert torch.equal(back.early_bird_prev["w"]["bits"], st.early_bird_prev["w"]["bits"])


# --------------------------------------------------------------------------------------------- toy runs
def test_converged_run_ends_rounds_early_in_steps_mode(tmp_path):
    """lr=0: the weights never move, every distance is 0. every=5, window=2: checks at 5 (no distance), 10, 15 ->
    converged at 15, where validation runs -> round 0 ends at step 15, round 1 at 30; the last round trains in full."""
    cb = _cb(tmp_path, EarlyBird(every=5, threshold=0.01, window=2))
    tr = _steps_fit(cb, tmp_path, lr=0.0)
    assert [r["step"] for r in cb.results] == [15, 30, 70] and tr.global_step == 70
    eb = [r["early_bird"] for r in cb.results]
    assert [e["ended_early"] for e in eb] == [True, True, False]
    assert eb[0] == {"steps": 15, "ended_early": True, "converged_step": 15, "check_steps": [5, 10, 15],
                     "distances": [None, 0.0, 0.0]}  # fmt: skip
    assert eb[2]["check_steps"] == []  # the last round has no next mask to converge
    assert [r["sparsity"] for r in cb.results] == pytest.approx([0.0, 0.5, 0.75])
    summary = json.loads((tmp_path / "tickets" / "summary.json").read_text())
    assert summary["rounds"][1]["early_bird"]["distances"] == [None, 0.0, 0.0]
    assert summary["early_bird"] == {"every": 5, "threshold": 0.01, "window": 2, "one_shot": False}
    assert "tickets/early_bird_distance" in tr.callback_metrics


def test_non_converging_run_trains_every_round_in_full(tmp_path):
    """lr=3e-3: masks still move by 1-5 % between checks, above threshold 0.01: no round ends early. No check at a
    round's last step (the round ends there anyway)."""
    cb = _cb(tmp_path, EarlyBird(every=5, threshold=0.01, window=2))
    _steps_fit(cb, tmp_path, lr=3e-3)
    assert [r["step"] for r in cb.results] == [40, 80, 120]
    for row in cb.results[:2]:
        e = row["early_bird"]
        assert not e["ended_early"] and e["check_steps"] == list(range(row["step"] - 35, row["step"], 5))
        assert e["distances"][0] is None and all(d >= 0.01 for d in e["distances"][1:])


def test_scored_round_ends_at_the_first_validation_after_convergence(tmp_path):
    """Checks every 5 steps, validation every 10: converged at 15, ended at the validation at step 20."""
    cb = _cb(tmp_path, EarlyBird(every=5, threshold=0.01, window=2))
    _steps_fit(cb, tmp_path, lr=0.0, val_every=10)
    assert [r["step"] for r in cb.results] == [20, 40, 80]
    assert cb.results[0]["early_bird"]["converged_step"] == 15


def test_unscored_run_ends_at_the_check(tmp_path):
    cb = _cb(tmp_path, EarlyBird(every=5, threshold=0.01, window=2), monitor=None)
    _steps_fit(cb, tmp_path, lr=0.0, val_every=40)
    assert [r["step"] for r in cb.results] == [15, 30, 70]


def test_late_rewinding_round_zero_never_ends_before_the_rewind_point(tmp_path):
    """rewind=step:12: the window is full at step 10 (window=1) but the round may end only once the snapshot exists:
    the check at 15 ends it."""
    cb = _cb(tmp_path, EarlyBird(every=5, threshold=0.01, window=1), rewind="step:12")
    _steps_fit(cb, tmp_path, lr=0.0)
    assert [r["step"] for r in cb.results] == [15, 25, 65]
    assert cb.results[0]["early_bird"]["distances"] == [None, 0.0, 0.0]


def test_epochs_mode_ends_at_the_next_validated_epoch_end(tmp_path):
    """8 batches per epoch, validation every 2 epochs, 4 epochs per round, checks every 2 steps (window 1):
    round 0 converges at step 4, epoch 0's end has no validation, epoch 1's (step 16) has -> it ends there;
    round 1 (from epoch 2) converges at step 20 and ends at the end of epoch 3 (step 32)."""
    cb = _cb(tmp_path, EarlyBird(every=2, threshold=0.01, window=1), epochs_per_round=4)
    tr = _trainer([cb], tmp_path, max_epochs=20, check_val_every_n_epoch=2)
    tr.fit(ToyClassifier(lr=0.0), ToyDataModule(**DATA))
    assert [(r["step"], r["epoch"]) for r in cb.results] == [(16, 1), (32, 3), (64, 7)]
    assert [r["early_bird"]["converged_step"] for r in cb.results] == [4, 20, None]


def test_steps_mode_needs_a_fixed_validation_grid(tmp_path):
    cb = _cb(tmp_path, EarlyBird(every=4), steps_per_round=8)
    with pytest.raises(ValueError, match=r"check_val_every_n_epoch=None\) with N dividing steps_per_round=8"):
        _trainer([cb], tmp_path, max_steps=100).fit(ToyClassifier(), ToyDataModule(**DATA))


def test_warns_when_no_round_can_end_early(tmp_path):
    cb = _cb(tmp_path, EarlyBird(every=5, window=3), steps_per_round=40)
    with pytest.warns(UserWarning, match="only at round ends"):
        _steps_fit(cb, tmp_path, lr=0.0, val_every=40)
    cb = _cb(tmp_path / "b", EarlyBird(every=10, window=3), steps_per_round=40)
    with pytest.warns(UserWarning, match="needs 40 steps of a round before it can end it, but a round has 40"):
        _steps_fit(cb, tmp_path / "b", lr=0.0, val_every=10)


def test_one_shot_draws_the_target_ticket_when_converged_and_stops(tmp_path):
    """EarlyBERT's use: train dense until the 75 % mask converges (step 15), write it as round 1 and stop. lr=0, so
    the oracle is the global magnitude mask of the initial encoder weights at 75 %."""
    cb = _cb(tmp_path, EarlyBird(every=5, threshold=0.01, window=2, one_shot=True), schedule="geometric")
    tr = _steps_fit(cb, tmp_path, lr=0.0)
    L.seed_everything(0)
    init = dict(ToyClassifier(lr=0.0).named_parameters())
    assert tr.global_step == 15 and cb.state.finished
    assert [(r["round"], r["step"]) for r in cb.results] == [(0, 15), (1, 15)]
    assert cb.results[1]["score"] is None and cb.results[1]["sparsity"] == pytest.approx(0.75)
    ticket = Ticket.load(tmp_path / "tickets" / "round-01.safetensors")
    flat = torch.cat([init[n].detach().abs().flatten() for n in ticket.masks])
    kth = flat.kthvalue(round(0.75 * flat.numel())).values  # the largest pruned magnitude
    for n, m in ticket.masks.items():
        assert torch.equal(m, init[n].detach().abs() > kth), n


def test_one_shot_without_convergence_draws_at_the_budget_end_and_warns(tmp_path):
    cb = _cb(tmp_path, EarlyBird(every=5, threshold=0.001, window=2, one_shot=True))
    with pytest.warns(UserWarning, match="did not converge"):
        tr = _steps_fit(cb, tmp_path, lr=3e-3)
    assert tr.global_step == 40 and [r["step"] for r in cb.results] == [40, 40]


def test_history_survives_a_checkpoint(tmp_path):
    """A run checkpointed at step 24 (end of epoch 2, mid round 0, after 6 checks) resumes to the same distances,
    early ends and masks as the uninterrupted run. The check at 28 needs both the stored previous mask (else it has
    no distance) and the stored distance of the check at 24 (the window of 2 that ends round 0 at the validation at
    32). Validation runs at epoch ends (every 8 steps): Lightning resumes bit-identically only then."""
    eb = EarlyBird(every=4, threshold=0.026, window=2)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1, save_on_train_epoch_end=True,
                           filename="{epoch}")  # fmt: skip
    ref = _cb(tmp_path, eb)
    _steps_fit(ref, tmp_path, lr=3e-3, val_every=8, callbacks=[ckpt])
    assert ref.results[0]["step"] == 32 and ref.results[0]["early_bird"]["converged_step"] == 28
    got = _cb(tmp_path, eb)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _steps_fit(got, tmp_path, lr=3e-3, val_every=8, ckpt_path=tmp_path / "ckpt" / "epoch=2.ckpt")
    assert got.results == ref.results
    assert all(torch.equal(got.masks[n], ref.masks[n]) for n in ref.masks)
