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
from lightning_tickets.data.easy_vqa import EasyVQADataModule, detect_foreground_box, region_features
from lightning_tickets.data.images import HDF5Features, ImageFolder, TSVFeatures, open_image_source

__all__ = [
    "EasyVQADataModule",
    "Flickr30kDataModule",
    "GQADataModule",
    "HDF5Features",
    "ImageFolder",
    "MultipleChoiceCollator",
    "NLVR2DataModule",
    "PairCollator",
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
    "region_features",
]
