"""Datasets, data modules and collation."""

from lightning_tickets.data.collate import VLCollator, pad_sequence
from lightning_tickets.data.easy_vqa import EasyVQADataModule, detect_foreground_box, region_features

__all__ = ["EasyVQADataModule", "VLCollator", "detect_foreground_box", "pad_sequence", "region_features"]
