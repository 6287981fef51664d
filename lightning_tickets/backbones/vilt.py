"""ViLT: a single-stream transformer over word tokens and raw image patches (``transformers.ViltModel``).

Text tokens (BERT embeddings, at most ``max_position_embeddings`` = 40 for ViLT-B/32) and image patches (a 32x32
convolution, position embeddings interpolated to the image size, an image ``[CLS]``) are concatenated and encoded by
one ViT-style encoder; the pooler reads the text ``[CLS]`` token. The output layout is ``[text tokens | image
[CLS] | patches]``, exactly as ``ViltModel``; :class:`Vilt` returns the masks of both parts.

Parameter names are ``vilt.<transformers ViltModel name>`` (the prefix of ``ViltForMaskedLM`` /
``ViltForQuestionAnswering`` / ... checkpoints), e.g. ``vilt.encoder.layer.3.attention.attention.query.weight``. The
``"encoder"`` pruning scope selects the 6 ``nn.Linear`` weights of every layer plus ``vilt.pooler.dense.weight``;
never the text / patch embeddings.

Batch keys read by :meth:`Vilt.forward`:

========================  =================  ==================================================================
key                       shape / dtype      meaning
========================  =================  ==================================================================
``input_ids``             ``[B, T]`` long    word-piece ids, ``T <= max_position_embeddings`` (40)
``attention_mask``        ``[B, T]``         1 at real text tokens (default: ``input_ids != pad_token_id``)
``token_type_ids``        ``[B, T]`` long    optional (default 0)
``pixel_values``          ``[B, 3, H, W]``   normalised pixels (mean 0.5, std 0.5), zero-padded
``pixel_mask``            ``[B, H, W]``      1 at real pixels (default: all)
``image_token_type_idx``  int or ``[B]``     modality type of the image tokens (optional, default: the
                                             constructor's ``image_token_type_idx``, 1)
========================  =================  ==================================================================

**Image token type (NLVR2).** Text tokens get modality type 0 and image tokens ``image_token_type_idx``. ViLT's
NLVR2 recipe encodes the left image with type 1 and the right image with type 2: with the batch contract's
``PairCollator`` (rows ``0..B-1`` left, ``B..2B-1`` right) pass ``batch["image_token_type_idx"] = torch.tensor([1] *
B + [2] * B)``, and build the backbone with ``modality_type_vocab_size=3`` (the extra row starts as a copy of the
image row 1, as in ViLT's NLVR2 fine-tuning).

**Patch order.** ``ViltModel`` samples patches with ``torch.multinomial`` (random order; at most
``config.max_image_length`` patches when that is positive, all of them with the default ``-1``). :class:`Vilt`
reorders the sampled patches to ``[real patches in raster order | padding patches]``, so with the default
``max_image_length=-1`` the output is deterministic; every token's value is the one ``ViltModel`` computes (the
encoder is permutation-equivariant). The sampling still draws from the global torch RNG.

**Adversarial training** (:mod:`lightning_tickets.adversarial`) perturbs the word embeddings and the embeddings of
the real patches (after the position embedding, before the modality type; not the image ``[CLS]``). With
``max_image_length > 0`` every pass samples other patches, so a perturbation found on one pass lands on other
patches on the next: keep the default ``-1`` for adversarial training.

Example:
    >>> import torch
    >>> model = Vilt("tiny")  # 64x64 images, 16x16 patches -> 16 patches + image [CLS]
    >>> batch = {"input_ids": torch.tensor([[101, 7, 8, 102]]), "pixel_values": torch.randn(1, 3, 64, 64)}
    >>> out = model(batch)
    >>> out.sequence.shape, out.pooled.shape, int(out.text_mask.sum()), int(out.image_mask.sum())
    (torch.Size([1, 21, 32]), torch.Size([1, 32]), 4, 17)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from transformers import ViltConfig, ViltModel

from lightning_tickets.backbones.base import (
    BackboneOutput,
    LoadReport,
    VLBackbone,
    check_config_fields,
    checkpoint_dir,
    load_hf_model,
)
from lightning_tickets.structured import Structure, attention_ffn_layer

log = logging.getLogger(__name__)

__all__ = ["PRESETS", "Vilt"]

#: Architecture presets (``ViltConfig`` fields). ``base`` is ViLT-B/32 as in ``dandelin/vilt-b32-mlm`` (12 layers,
#: 768, patch 32, image 384, text length 40, BERT-base uncased vocabulary), ``tiny`` is for tests (64x64 images).
PRESETS: dict[str, dict[str, Any]] = {
    "base": dict(
        vocab_size=30522,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=40,
        image_size=384,
        patch_size=32,
    ),
    "tiny": dict(
        vocab_size=1000,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=40,
        image_size=64,
        patch_size=16,
    ),
}

#: Keys of ViLT task / pre-training heads: unexpected but harmless.
_HEAD_PREFIXES = ("mlm_score.", "itm_score.", "classifier.", "rank_output.")


class Vilt(VLBackbone):
    """ViLT backbone wrapping ``transformers.ViltModel`` (stored as ``self.vilt``).

    Args:
        preset: architecture defaults, ``"base"`` (ViLT-B/32) or ``"tiny"`` (2 layers, 32, 64x64 images, patch 16;
            tests). With ``pretrained_path`` the checkpoint's ``config.json`` decides instead.
        pretrained_path: transformers ViLT checkpoint (``ViltModel``, ``ViltForMaskedLM``,
            ``ViltForQuestionAnswering``, ...): a local directory (``config.json`` +
            ``model.safetensors`` / ``pytorch_model.bin``, as written by ``save_pretrained``), ``"package:<module>"``
            or a Hugging Face hub id such as ``"dandelin/vilt-b32-mlm"``, found in the hub cache or downloaded like
            ``from_pretrained`` does (``HF_HUB_OFFLINE=1`` honoured:
            :func:`~lightning_tickets.paths.resolve_pretrained_path`), then loaded with ``ViltModel.from_pretrained``.
            Missing / unexpected keys are logged and kept in :attr:`load_reports`.
        image_token_type_idx: default modality type of the image tokens (1; a batch key of the same name overrides
            it per batch or per row).
        modality_type_vocab_size: number of modality types (text 0, image 1, [second image 2]). ``None``: the
            preset's / checkpoint's (2). A larger value than the checkpoint's adds rows initialised as copies of row 1
            (:meth:`expand_modality_types`).
        config_overrides: extra ``ViltConfig`` fields (e.g. ``{"max_image_length": 200}``), usable from yaml.
        **overrides: same as ``config_overrides``, as keyword arguments.

    Attributes:
        config: the ``ViltConfig`` in use.
        load_reports: one :class:`~lightning_tickets.backbones.base.LoadReport` per checkpoint loaded (keys in
            this module's names, ``vilt.*``; unexpected keys in the checkpoint's names).

    Example:
        >>> model = Vilt("tiny", modality_type_vocab_size=3)
        >>> model.hidden_size, len(model.vilt.encoder.layer), model.vilt.embeddings.token_type_embeddings.num_embeddings
        (32, 2, 3)
    """

    perturbable_modalities = ("text", "image")

    def __init__(
        self,
        preset: str = "base",
        pretrained_path: str | None = None,
        image_token_type_idx: int = 1,
        modality_type_vocab_size: int | None = None,
        config_overrides: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__()
        fields = {**(config_overrides or {}), **overrides}
        if "modality_type_vocab_size" in fields:
            raise ValueError("pass modality_type_vocab_size as its own argument, not as a config override")
        check_config_fields(ViltConfig, fields)
        self.load_reports: list[LoadReport] = []
        if pretrained_path is None:
            if preset not in PRESETS:
                raise ValueError(f"preset={preset!r} is unknown; use one of {sorted(PRESETS)}")
            types = {} if modality_type_vocab_size is None else {"modality_type_vocab_size": modality_type_vocab_size}
            self.vilt = ViltModel(ViltConfig(**{**PRESETS[preset], **types, **fields}))
        else:
            directory = checkpoint_dir(pretrained_path, "vilt")
            config = ViltConfig.from_pretrained(str(directory), local_files_only=True)
            config.update(fields)
            self.vilt, report = load_hf_model(
                ViltModel, directory, config, prefix="vilt.", heads=_HEAD_PREFIXES, logger=log
            )
            self.load_reports.append(report)
            params = {n for n, _ in self.named_parameters()}
            self._new_parameter_names = set(report.missing_keys) & params
            if modality_type_vocab_size is not None:
                self.expand_modality_types(modality_type_vocab_size)
        self.config: ViltConfig = self.vilt.config
        self.hidden_size = int(self.config.hidden_size)
        self.image_token_type_idx = int(image_token_type_idx)
        self._check_type_idx(self.image_token_type_idx)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], **kwargs: Any) -> Vilt:
        """Build from a local transformers ViLT directory or hub id (see ``pretrained_path``).

        Example:
            >>> import tempfile
            >>> with tempfile.TemporaryDirectory() as d:
            ...     Vilt("tiny").save_pretrained(d)
            ...     model = Vilt.from_pretrained(d)
            >>> model.config.image_size, model.load_reports[0].missing_keys, model.new_parameter_names()
            (64, [], set())
        """
        return cls(pretrained_path=os.fspath(path), **kwargs)

    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        """Write the wrapped ``ViltModel`` in transformers format (``config.json`` + ``model.safetensors``)."""
        self.vilt.save_pretrained(os.fspath(directory))

    def expand_modality_types(self, n: int) -> None:
        """Grow the modality-type embedding to ``n`` rows; new rows copy row 1 (image), as ViLT does for NLVR2.

        Call it before the optimizer is created (the embedding is a new ``nn.Parameter``). A parameter that was
        loaded from a checkpoint stays "not new" (:meth:`new_parameter_names`).

        Example:
            >>> model = Vilt("tiny")
            >>> model.expand_modality_types(3)
            >>> emb = model.vilt.embeddings.token_type_embeddings.weight
            >>> emb.shape[0], bool((emb[2] == emb[1]).all()), model.config.modality_type_vocab_size
            (3, True, 3)
        """
        old = self.vilt.embeddings.token_type_embeddings
        if n < old.num_embeddings:
            raise ValueError(f"modality_type_vocab_size={n} is smaller than the model's {old.num_embeddings}")
        if n == old.num_embeddings:
            return
        new = nn.Embedding(n, old.embedding_dim, device=old.weight.device, dtype=old.weight.dtype)
        with torch.no_grad():
            new.weight[: old.num_embeddings] = old.weight
            new.weight[old.num_embeddings :] = old.weight[1]
        self.vilt.embeddings.token_type_embeddings = new
        self.vilt.config.modality_type_vocab_size = n

    def _check_type_idx(self, idx: int | torch.Tensor) -> None:
        n = self.vilt.embeddings.token_type_embeddings.num_embeddings
        if isinstance(idx, torch.Tensor):
            if idx.device.type != "cpu":  # no host sync on accelerators; the embedding lookup checks the range
                return
            bad = idx.numel() > 0 and bool(((idx < 1) | (idx >= n)).any())
            value = idx.tolist()
        else:
            bad, value = not 1 <= int(idx) < n, idx
        if bad:
            raise ValueError(
                f"image_token_type_idx={value} is outside 1..{n - 1} (modality_type_vocab_size={n}); for a second "
                f"image type build the backbone with modality_type_vocab_size={n + 1} (e.g. NLVR2: 3)"
            )

    # ------------------------------------------------------------------ structure
    def structure(self) -> Structure:
        """Attention blocks and FFNs of the encoder (names relative to this module), for structured pruning.

        Example:
            >>> s = Vilt("tiny").structure()
            >>> len(s.attention), s.attention[0].core, s.ffn[0].output
            (2, 'vilt.encoder.layer.0.attention.attention', 'vilt.encoder.layer.0.output.dense')
        """
        out = Structure()
        for i in range(len(self.vilt.encoder.layer)):
            out = out + attention_ffn_layer(
                self,
                f"vilt.encoder.layer.{i}",
                "attention.attention",
                "attention.output.dense",
                ("intermediate.dense", "output.dense"),
            )
        return out

    # ------------------------------------------------------------------ forward
    def forward(self, batch: Mapping[str, Any]) -> BackboneOutput:
        """Encode ``[text tokens | image [CLS] | patches]`` (see the module docstring for the batch keys)."""
        input_ids = batch["input_ids"]
        b, t = input_ids.shape
        if t > self.config.max_position_embeddings:
            raise ValueError(
                f"input_ids has {t} tokens but ViLT has max_position_embeddings={self.config.max_position_embeddings}"
                ": truncate the text (ViLT-B/32: 40 tokens)"
            )
        pad = self.config.pad_token_id if self.config.pad_token_id is not None else 0
        text_mask = batch.get("attention_mask")
        text_mask = input_ids.ne(pad) if text_mask is None else text_mask.bool()
        pixel_values = batch.get("pixel_values")
        if pixel_values is None:
            raise KeyError("ViLT needs images: batch key 'pixel_values' [B, 3, H, W] (and optionally 'pixel_mask')")
        pixel_mask = batch.get("pixel_mask")
        if pixel_mask is None:
            pixel_mask = torch.ones(b, *pixel_values.shape[-2:], dtype=torch.long, device=pixel_values.device)
        idx = batch.get("image_token_type_idx")
        idx = self.image_token_type_idx if idx is None else idx
        if not isinstance(idx, torch.Tensor):
            idx = torch.as_tensor(idx, dtype=torch.long)
        self._check_type_idx(idx)
        if idx.numel() not in (1, b):
            raise ValueError(f"image_token_type_idx has {idx.numel()} values for a batch of {b} rows")
        idx = idx.to(device=input_ids.device, dtype=torch.long).reshape(-1).expand(b)

        emb = self.vilt.embeddings
        words = None
        if self.perturbing:  # adversarial training: perturb the word embeddings (VILLA)
            words = self.perturb("text", emb.text_embeddings.word_embeddings(input_ids), text_mask)
        text = emb.text_embeddings(input_ids=input_ids, token_type_ids=batch.get("token_type_ids"), inputs_embeds=words)
        text = text + emb.token_type_embeddings(torch.zeros_like(input_ids))
        image, img_mask, (patch_index, (_, width)) = emb.visual_embed(
            pixel_values, pixel_mask.long(), max_image_length=self.config.max_image_length
        )
        # canonical patch order: [image CLS | real patches in raster order | padding patches]
        real = img_mask[:, 1:].bool()
        key = patch_index[..., 0] * width + patch_index[..., 1]
        key = torch.where(real, key, key + patch_index.new_tensor(1 << 30))
        order = key.argsort(dim=1)
        patches = image[:, 1:].gather(1, order.unsqueeze(-1).expand(-1, -1, image.shape[-1]))
        image = torch.cat([image[:, :1], patches], dim=1)
        img_mask = torch.cat([img_mask[:, :1].bool(), real.gather(1, order)], dim=1)
        if self.perturbing:  # adversarial training: the real patch embeddings (not the image [CLS])
            image = self.perturb("image", image, torch.cat([torch.zeros_like(img_mask[:, :1]), img_mask[:, 1:]], 1))
        image = image + emb.token_type_embeddings(idx[:, None].expand(-1, image.shape[1]))

        hidden = torch.cat([text, image], dim=1)
        attention_mask = torch.cat([text_mask, img_mask], dim=1)
        additive = (~attention_mask)[:, None, None, :].to(hidden.dtype) * torch.finfo(hidden.dtype).min
        sequence = self.vilt.encoder(hidden, attention_mask=additive, return_dict=True).last_hidden_state
        sequence = self.vilt.layernorm(sequence)
        pooled = self.vilt.pooler(sequence)
        no_text, no_img = torch.zeros_like(text_mask), torch.zeros_like(img_mask)
        return BackboneOutput(
            sequence=sequence,
            pooled=pooled,
            attention_mask=attention_mask,
            text_mask=torch.cat([text_mask, no_img], dim=1),
            image_mask=torch.cat([no_text, img_mask], dim=1),
        )
