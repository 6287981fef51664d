"""Datasets, data modules and collation."""

from lightning_tickets.data.collate import VLCollator, pad_sequence
from lightning_tickets.data.collators import MultipleChoiceCollator, PairCollator, VLBatchCollator
from lightning_tickets.data.datamodules import (
    Flickr30kDataModule,
    GQADataModule,
    NLVR2DataModule,
    RefCOCODataModule,
    SNLIVEDataModule,
    VCRDataModule,
    VQAv2DataModule,
)
from lightning_tickets.data.easy_vqa import (
    EasyVQADataModule,
    EasyVQAPretrainDataModule,
    detect_foreground_box,
    question_type,
    region_features,
)
from lightning_tickets.data.images import HDF5Features, ImageFolder, TSVFeatures, open_image_source
from lightning_tickets.data.pretrain import PretrainDataModule

__all__ = [
    "EasyVQADataModule",
    "EasyVQAPretrainDataModule",
    "Flickr30kDataModule",
    "GQADataModule",
    "HDF5Features",
    "ImageFolder",
    "MultipleChoiceCollator",
    "NLVR2DataModule",
    "PairCollator",
    "PretrainDataModule",
    "RefCOCODataModule",
    "SNLIVEDataModule",
    "TSVFeatures",
    "VCRDataModule",
    "VLBatchCollator",
    "VLCollator",
    "VQAv2DataModule",
    "detect_foreground_box",
    "open_image_source",
    "pad_sequence",
    "question_type",
    "region_features",
]
