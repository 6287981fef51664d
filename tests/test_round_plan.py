"""Direct tests of :class:`lightning_tickets.schedule.RoundPlan` and :func:`round_length` against fake Trainers."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from lightning_tickets.rewind import RewindPoint
from lightning_tickets.schedule import RoundPlan, round_length, steps_per_round

SPARSITIES = [0.0, 0.5, 0.75]  # 3 rounds


def trainer(**kw):
    """A Trainer as RoundPlan sees it: 10 batches per epoch, validation at every epoch end, no limits."""
    base = dict(
        num_training_batches=10,
        accumulate_grad_batches=1,
        estimated_stepping_batches=100,
        max_epochs=None,
        max_steps=-1,
        val_check_interval=1.0,
        val_check_batch=10,
        check_val_every_n_epoch=1,
        callbacks=[],
    )
    base.update(kw)
    return SimpleNamespace(**base)


def point(spec):
    return RewindPoint.parse(spec)


# -- construction
def test_plan_properties():
    plan = RoundPlan([0.0, 0.2, 0.36, 0.488], steps_per_round=25)
    assert (plan.num_rounds, plan.total_steps) == (4, 100)
    assert plan.describe() == "[0, 0.2, 0.36, 0.488]"
    assert RoundPlan(SPARSITIES, epochs_per_round=2).total_steps is None
    assert RoundPlan(SPARSITIES).rewind == point("init")


@pytest.mark.parametrize("value", [0, -3, True, 1.5, "2"])
@pytest.mark.parametrize("name", ["epochs_per_round", "steps_per_round"])
def test_round_length_must_be_a_positive_integer(name, value):
    with pytest.raises(ValueError, match=rf"^{name}={value!r} must be a positive integer$"):
        RoundPlan(SPARSITIES, **{name: value})


def test_both_lengths_are_refused_none_is_the_whole_fit():
    with pytest.raises(ValueError, match=r"give exactly one of epochs_per_round and steps_per_round \(got "):
        RoundPlan(SPARSITIES, epochs_per_round=1, steps_per_round=10)
    plan = RoundPlan(SPARSITIES)  # fixed-ticket training: one round = the whole fit
    assert plan.steps(trainer(estimated_stepping_batches=123.0)) == 123
    plan.check(trainer(max_steps=1, max_epochs=1), "val/acc", True)  # nothing to check


@pytest.mark.parametrize(
    ("kw", "spec", "message"),
    [
        (
            {"steps_per_round": 10},
            "step:10",
            r"rewind='step:10' points past round 0 \(steps_per_round=10\); use K < 10",
        ),
        (
            {"steps_per_round": 10},
            "step:11",
            r"rewind='step:11' points past round 0 \(steps_per_round=10\); use K < 10",
        ),
        ({"epochs_per_round": 2}, "epoch:2", r"rewind='epoch:2' points past round 0 \(epochs_per_round=2\); use K < 2"),
    ],
)
def test_rewind_past_round_zero_is_refused_at_construction(kw, spec, message):
    with pytest.raises(ValueError, match=message) as err:
        RoundPlan(SPARSITIES, rewind=point(spec), **kw)
    assert str(err.value).startswith("rewind=")


def test_rewind_inside_round_zero_or_other_unit_is_accepted_at_construction():
    RoundPlan(SPARSITIES, steps_per_round=10, rewind=point("step:9"))
    RoundPlan(SPARSITIES, epochs_per_round=2, rewind=point("epoch:1"))
    RoundPlan(SPARSITIES, epochs_per_round=1, rewind=point("step:50"))  # steps of an epoch: known only at check()
    RoundPlan(SPARSITIES, steps_per_round=10, rewind=point("epoch:3"))


# -- steps()
def test_steps_in_steps_mode_ignore_the_trainer():
    assert RoundPlan(SPARSITIES, steps_per_round=7).steps(trainer(num_training_batches=float("inf"))) == 7


@pytest.mark.parametrize(
    ("epochs", "batches", "acc", "expected"),
    [(1, 10, 1, 10), (2, 10, 1, 20), (2, 10, 3, 8), (1, 10, 4, 3), (3, 1, 1, 3), (1, 3, 8, 1)],
)
def test_steps_in_epochs_mode(epochs, batches, acc, expected):
    # optimizer steps per epoch = ceil(batches / accumulate_grad_batches) (Lightning steps on an epoch's last batch)
    plan = RoundPlan(SPARSITIES, epochs_per_round=epochs)
    assert plan.steps(trainer(num_training_batches=batches, accumulate_grad_batches=acc)) == expected


def test_steps_in_epochs_mode_set_up_the_data_first():
    class Lazy:
        """num_training_batches is inf until estimated_stepping_batches has made Lightning set up the data."""

        accumulate_grad_batches = 1
        num_training_batches = float("inf")

        @property
        def estimated_stepping_batches(self):
            self.num_training_batches = 12
            return 24

    assert RoundPlan(SPARSITIES, epochs_per_round=2).steps(Lazy()) == 24


@pytest.mark.parametrize("batches", [float("inf"), None])
def test_steps_in_epochs_mode_need_a_sized_dataloader(batches):
    with pytest.raises(
        ValueError, match="epochs_per_round needs a dataloader with a length; use steps_per_round instead"
    ):
        RoundPlan(SPARSITIES, epochs_per_round=1).steps(trainer(num_training_batches=batches))


# -- check(): epochs mode
def test_max_epochs_too_small():
    plan = RoundPlan(SPARSITIES, epochs_per_round=2)
    with pytest.raises(ValueError) as err:
        plan.check(trainer(max_epochs=5), "val/acc", True)
    assert str(err.value) == (
        "Trainer(max_epochs=5) cannot fit 3 rounds x epochs_per_round=2: set max_epochs >= 6 "
        "(sparsities [0, 0.5, 0.75])"
    )
    for ok in (6, 100, None, -1):
        plan.check(trainer(max_epochs=ok), "val/acc", True)


def test_check_val_every_n_epoch_must_divide_epochs_per_round():
    plan = RoundPlan(SPARSITIES, epochs_per_round=3)
    with pytest.raises(ValueError) as err:
        plan.check(trainer(check_val_every_n_epoch=2), "val/acc", True)
    assert "check_val_every_n_epoch=2 does not divide epochs_per_round=3" in str(err.value)
    assert str(err.value).endswith("set check_val_every_n_epoch=1")
    plan.check(trainer(check_val_every_n_epoch=3), "val/acc", True)
    plan.check(trainer(check_val_every_n_epoch=2), None, True)  # no score to read
    plan.check(trainer(check_val_every_n_epoch=2), "val/acc", False)  # no validation at all


def test_max_steps_too_small_in_epochs_mode():
    plan = RoundPlan(SPARSITIES, epochs_per_round=1)  # 3 rounds x 10 steps
    with pytest.raises(
        ValueError, match=r"^Trainer\(max_steps=29\) cannot fit 3 rounds x 10 steps: set max_steps >= 30"
    ):
        plan.check(trainer(max_steps=29), "val/acc", True)
    plan.check(trainer(max_steps=30), "val/acc", True)


@pytest.mark.parametrize(("spec", "refused"), [("step:9", False), ("step:10", True), ("step:40", True)])
def test_step_rewind_past_round_zero_in_epochs_mode(spec, refused):
    plan = RoundPlan(SPARSITIES, epochs_per_round=1, rewind=point(spec))
    if refused:
        with pytest.raises(ValueError) as err:
            plan.check(trainer(), "val/acc", True)
        assert str(err.value) == (f"rewind='{spec}' points past round 0, which has 10 optimizer steps; use a smaller K")
    else:
        plan.check(trainer(), "val/acc", True)
    plan.check(trainer(), "val/acc", True, from_round=1)  # resumed past round 0: the rewind point is taken


# -- check(): steps mode
def test_max_steps_too_small_in_steps_mode():
    plan = RoundPlan(SPARSITIES, steps_per_round=10)
    with pytest.raises(ValueError) as err:
        plan.check(trainer(max_steps=29), "val/acc", True)
    assert str(err.value) == (
        "Trainer(max_steps=29) cannot fit 3 rounds x 10 steps: set max_steps >= 30 (sparsities [0, 0.5, 0.75])"
    )
    plan.check(trainer(max_steps=30), "val/acc", True)
    plan.check(trainer(max_steps=-1), "val/acc", True)


@pytest.mark.parametrize(("k", "refused"), [(1, False), (2, True)])
def test_epoch_rewind_in_steps_mode(k, refused):
    plan = RoundPlan(SPARSITIES, steps_per_round=20, rewind=point(f"epoch:{k}"))  # 10 steps per epoch
    if refused:
        with pytest.raises(ValueError, match=rf"rewind='epoch:{k}' points past round 0, which has 20 optimizer steps"):
            plan.check(trainer(), "val/acc", True)
    else:
        plan.check(trainer(), "val/acc", True)  # rounds of 2 epochs, validated at every epoch end


def test_val_check_interval_must_divide_steps_per_round():
    plan = RoundPlan(SPARSITIES, steps_per_round=10)
    t = trainer(val_check_interval=3, val_check_batch=3, check_val_every_n_epoch=None)
    with pytest.raises(ValueError) as err:
        plan.check(t, "val/acc", True)
    assert str(err.value) == (
        "steps_per_round=10 is not a multiple of val_check_interval=3: the score of a round must come from a "
        "validation at its end; set val_check_interval=10"
    )
    for vci in (10, 5, 1):
        plan.check(trainer(val_check_interval=vci, val_check_batch=vci, check_val_every_n_epoch=None), "val/acc", True)
    plan.check(t, None, True)  # nothing scored: nothing to check
    plan.check(t, "val/acc", False)


@pytest.mark.parametrize(
    ("steps", "kw", "where"),
    [
        # 25 batches per epoch, validation at each epoch end: round 1 ends at batch 9 of epoch 0
        (10, {"num_training_batches": 25, "val_check_batch": 25}, "round 1 ends at step 10 (epoch 0, batch 9)"),
        # validation every other epoch: round 1 ends at the end of epoch 0, which is not validated
        (10, {"check_val_every_n_epoch": 2}, "round 1 ends at step 10 (epoch 0, batch 9)"),
        # rounds of 15 steps over epochs of 10 batches: round 1 ends mid-epoch 1
        (15, {}, "round 1 ends at step 15 (epoch 1, batch 4)"),
    ],
)
def test_validation_must_run_at_every_round_end(steps, kw, where):
    plan = RoundPlan(SPARSITIES, steps_per_round=steps)
    with pytest.raises(ValueError) as err:
        plan.check(trainer(**kw), "val/acc", True)
    msg = str(err.value)
    assert msg.startswith(where)
    assert "no validation is scheduled there, so the round's score ('val/acc') would be unknown" in msg


def test_validation_message_names_the_interval_in_batches():
    plan = RoundPlan(SPARSITIES, steps_per_round=7)
    with pytest.raises(ValueError) as err:
        plan.check(trainer(accumulate_grad_batches=2), "val/acc", True)  # round 1 ends at batch 14 - 1
    assert str(err.value).endswith("Set Trainer(val_check_interval=14, check_val_every_n_epoch=None)")
    assert str(err.value).startswith("round 1 ends at step 7 (epoch 1, batch 3)")


@pytest.mark.parametrize(
    ("steps", "kw"),
    [
        (10, {}),  # a round = an epoch, validated at every epoch end
        (20, {}),
        (10, {"num_training_batches": 5, "val_check_batch": 5, "check_val_every_n_epoch": 2}),
        (10, {"val_check_interval": 10, "val_check_batch": 10, "check_val_every_n_epoch": None}),
        (10, {"val_check_interval": 5, "val_check_batch": 5, "check_val_every_n_epoch": None}),
        (5, {"val_check_interval": 0.5, "val_check_batch": 5}),
        (10, {"num_training_batches": float("inf"), "val_check_batch": float("inf")}),  # unknown: checked at round ends
    ],
)
def test_plans_with_validation_at_every_round_end_pass(steps, kw):
    RoundPlan(SPARSITIES, steps_per_round=steps).check(trainer(**kw), "val/acc", True)


def test_later_rounds_only_are_checked_when_resuming():
    # 20 batches per epoch, validation at epoch ends only: round 1 (step 10) is unscored, round 2 (step 20) is scored
    plan = RoundPlan([0.0, 0.5], steps_per_round=10)
    t = trainer(num_training_batches=20, val_check_batch=20)
    with pytest.raises(ValueError, match=r"^round 1 ends at step 10"):
        plan.check(t, "val/acc", True)
    plan.check(t, "val/acc", True, from_round=1)


@pytest.mark.parametrize("vci", [20, 4])
def test_val_check_interval_counts_batches_with_gradient_accumulation(vci):
    t = trainer(
        num_training_batches=1000,
        accumulate_grad_batches=2,
        val_check_interval=vci,
        val_check_batch=vci,
        check_val_every_n_epoch=None,
    )
    RoundPlan(SPARSITIES, steps_per_round=10).check(t, "val/acc", True)


def test_epoch_end_is_not_validated_when_val_check_batch_does_not_divide_it():
    t = trainer(val_check_interval=3, val_check_batch=3, check_val_every_n_epoch=1)
    with pytest.raises(ValueError, match="no validation is scheduled there"):
        RoundPlan(SPARSITIES, steps_per_round=10).check(t, "val/acc", True)


# -- round_length
def test_round_length_reads_the_ticket_callbacks_plan():
    plan = RoundPlan(SPARSITIES, epochs_per_round=2)
    t = trainer(callbacks=[object(), SimpleNamespace(round_plan="not a plan"), SimpleNamespace(round_plan=plan)])
    assert round_length(t) == 20
    assert round_length(trainer(num_training_batches=4, callbacks=t.callbacks)) == 8
    assert round_length(trainer(callbacks=[SimpleNamespace(round_plan=RoundPlan(SPARSITIES, steps_per_round=7))])) == 7
    assert round_length(trainer()) is None
    assert round_length(SimpleNamespace(callbacks=None)) is None
    assert steps_per_round is round_length
