"""The training settings every task takes through ``**kwargs``: declared once on TaskModule, still yaml keys."""

from __future__ import annotations

import inspect

import pytest
from jsonargparse import ArgumentParser

from lightning_tickets.backbones import Uniter
from lightning_tickets.tasks import (
    GQA,
    NLVR2,
    VCR,
    VQA,
    ImageTextRetrieval,
    LabelClassification,
    Pretraining,
    ReferringExpression,
    TaskModule,
    VisualEntailment,
)
from lightning_tickets.tasks.base import TRAINING_ARGS

TASKS = [GQA, NLVR2, VCR, VQA, ImageTextRetrieval, Pretraining, ReferringExpression, VisualEntailment]
EXTRA = {LabelClassification: {"num_classes": 3}}


def _defaults(cls: type) -> dict:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, "model", skip={"backbone"})
    return vars(parser.get_defaults().model)


def test_training_args_are_the_keyword_arguments_of_task_module():
    params = inspect.signature(TaskModule.__init__).parameters
    assert list(TRAINING_ARGS) == [n for n in params if n not in ("self", "backbone")]


@pytest.mark.parametrize("cls", [*TASKS, LabelClassification], ids=lambda c: c.__name__)
def test_yaml_keys_of_every_task_include_the_training_settings(cls):
    """LightningCLI follows ``**kwargs`` to TaskModule: ``model.init_args.lr`` etc. stay, with TaskModule's
    defaults, and no task declares them a second time."""
    base = {n: p.default for n, p in inspect.signature(TaskModule.__init__).parameters.items() if n in TRAINING_ARGS}
    defaults = _defaults(cls)
    for name, default in base.items():
        assert name in defaults, f"{cls.__name__} lost the yaml key {name}"
        assert defaults[name] in (default, list(default) if isinstance(default, tuple) else default), name
    own = inspect.signature(cls.__init__).parameters
    assert not set(own) & set(TRAINING_ARGS), f"{cls.__name__} repeats {set(own) & set(TRAINING_ARGS)}"


@pytest.mark.parametrize("cls", [*TASKS, LabelClassification], ids=lambda c: c.__name__)
def test_training_settings_reach_the_optimizer_and_the_hparams(cls):
    model = cls(Uniter("tiny", img_dim=8), lr=0.125, weight_decay=0.5, eps=1e-3, **EXTRA.get(cls, {}))
    assert (model.lr, model.weight_decay, model.eps) == (0.125, 0.5, 1e-3)
    assert model.hparams.lr == 0.125 and model.hparams.head_lr_multiplier == 10.0  # defaults recorded too
    optimizer = model.configure_optimizers()["optimizer"]
    assert {g["lr"] for g in optimizer.param_groups} <= {0.125, 1.25} and optimizer.defaults["eps"] == 1e-3


def test_a_misspelt_training_setting_is_an_error_naming_it():
    with pytest.raises(TypeError, match="lrr"):
        VQA(Uniter("tiny", img_dim=8), lrr=0.1)
