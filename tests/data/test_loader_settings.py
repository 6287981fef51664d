"""The loader settings are declared once (VLDataModule) and still reach every data module, its yaml keys and hparams."""

from __future__ import annotations

import inspect

import pytest
from jsonargparse import ArgumentParser

from lightning_tickets.data import (
    Flickr30kDataModule,
    GQADataModule,
    NLVR2DataModule,
    PretrainDataModule,
    RefCOCODataModule,
    SNLIVEDataModule,
    VCRDataModule,
    VQAv2DataModule,
)
from lightning_tickets.data.base import VLDataModule

MODULES = [
    Flickr30kDataModule, GQADataModule, NLVR2DataModule, PretrainDataModule, RefCOCODataModule, SNLIVEDataModule,
    VCRDataModule, VQAv2DataModule,
]  # fmt: skip
LOADER = {n: p.default for n, p in inspect.signature(VLDataModule.__init__).parameters.items() if n != "self"}
#: the settings a family declares again, only to give them its own default
OWN_DEFAULTS = {
    VCRDataModule: {"max_text_len": 80, "batch_size": 8, "image_key": "{img_fn}"},
    Flickr30kDataModule: {"image_key": "{stem}"},
    PretrainDataModule: {"max_text_len": 60},
}
REQUIRED = {Flickr30kDataModule: {"annotations": "dataset_flickr30k.json"}}


def _yaml_defaults(cls: type) -> dict:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, "data")
    return vars(parser.get_defaults().data)


@pytest.mark.parametrize("cls", MODULES, ids=lambda c: c.__name__)
def test_loader_settings_are_yaml_keys_of_every_data_module(cls):
    defaults = _yaml_defaults(cls)
    expected = {**LOADER, **OWN_DEFAULTS.get(cls, {})}
    if cls is RefCOCODataModule:  # region features only: no ViLT image sizes
        expected = {k: v for k, v in expected.items() if k not in ("image_size", "max_size")}
        assert "image_size" not in defaults and "max_size" not in defaults
    for name, default in expected.items():
        if name != "features":
            assert defaults[name] == default, (cls.__name__, name)
    own = set(inspect.signature(cls.__init__).parameters) & set(LOADER)
    assert own <= {"features", *OWN_DEFAULTS.get(cls, {})}, f"{cls.__name__} declares {own} again"


@pytest.mark.parametrize("cls", MODULES, ids=lambda c: c.__name__)
def test_loader_settings_reach_the_module_and_its_hparams(cls):
    dm = cls(features="feats.h5", num_workers=3, eval_batch_size=5, **REQUIRED.get(cls, {}))
    assert (dm.features, dm.num_workers, dm.eval_batch_size) == ("feats.h5", 3, 5)
    expected = {**LOADER, **OWN_DEFAULTS.get(cls, {})}
    assert dm.batch_size == expected["batch_size"] and dm.max_text_len == expected["max_text_len"]
    assert dm.image_key == expected["image_key"]
    hp = dm.hparams  # every setting is recorded, the defaults included (logged by LightningCLI's loggers)
    assert hp["num_workers"] == 3 and hp["batch_size"] == expected["batch_size"] and hp["features"] == "feats.h5"
    assert hp["tokenizer_path"] == LOADER["tokenizer_path"]


def test_the_old_module_path_still_names_the_same_classes():
    from lightning_tickets.data import datamodules

    assert datamodules.VQAv2DataModule is VQAv2DataModule and datamodules.VLDataModule is VLDataModule
