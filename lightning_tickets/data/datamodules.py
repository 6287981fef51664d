"""Compatibility alias: the data modules now live in one module per dataset family.

:mod:`~lightning_tickets.data.vqa_v2`, :mod:`~lightning_tickets.data.gqa`, :mod:`~lightning_tickets.data.snli_ve`,
:mod:`~lightning_tickets.data.nlvr2`, :mod:`~lightning_tickets.data.vcr`, :mod:`~lightning_tickets.data.refcoco`,
:mod:`~lightning_tickets.data.flickr30k`, on the shared :mod:`~lightning_tickets.data.base`. This module re-exports
them so that configs written as ``class_path: lightning_tickets.data.datamodules.VQAv2DataModule`` keep working;
new configs use ``lightning_tickets.data.VQAv2DataModule``.

Example:
    >>> from lightning_tickets.data.datamodules import VQAv2DataModule
    >>> VQAv2DataModule.__module__
    'lightning_tickets.data.vqa_v2'
"""

from lightning_tickets.data.base import (
    SPLITS,
    FilesDataModule,
    TextImageDataset,
    VLDataModule,
    format_image_key,
    load_text_tokenizer,
)
from lightning_tickets.data.flickr30k import Flickr30kDataModule, RetrievalEvalDataset, RetrievalTrainDataset
from lightning_tickets.data.gqa import GQADataModule
from lightning_tickets.data.nlvr2 import NLVR2DataModule, PairDataset
from lightning_tickets.data.refcoco import RefCOCODataModule, RefExpDataset, box_iou
from lightning_tickets.data.snli_ve import SNLIVEDataModule
from lightning_tickets.data.vcr import MultipleChoiceDataset, VCRDataModule
from lightning_tickets.data.vqa_v2 import VQAv2DataModule

__all__ = [
    "SPLITS",
    "FilesDataModule",
    "Flickr30kDataModule",
    "GQADataModule",
    "MultipleChoiceDataset",
    "NLVR2DataModule",
    "PairDataset",
    "RefCOCODataModule",
    "RefExpDataset",
    "RetrievalEvalDataset",
    "RetrievalTrainDataset",
    "SNLIVEDataModule",
    "TextImageDataset",
    "VCRDataModule",
    "VLDataModule",
    "VQAv2DataModule",
    "box_iou",
    "format_image_key",
    "load_text_tokenizer",
]
