"""LXMERT: a two-stream vision-and-language transformer (``transformers.LxmertModel`` behind :class:`VLBackbone`).

Text tokens go through the language encoder (``encoder.layer.N``), region features through the object-relationship
encoder (``encoder.r_layers.N``), then both streams through the cross-modality encoder (``encoder.x_layers.N``);
the pooler reads the language ``[CLS]`` token. :class:`Lxmert` concatenates the two output streams into one
``[B, T + R, H]`` sequence (``[text tokens | regions]``) and says which positions are which in ``text_mask`` /
``image_mask``, so every task head written for UNITER also works with LXMERT.

Adversarial training (:mod:`lightning_tickets.adversarial`) perturbs the word embeddings (passed to
``LxmertModel`` as ``inputs_embeds``) and the projected region features ``LN(visn_fc(feat))`` (a forward hook on
``encoder.visn_fc.visn_layer_norm``, present only while a perturbation is active).

Parameter names are ``lxmert.<transformers LxmertModel name>`` (the prefix of ``LxmertForPreTraining`` /
``LxmertForQuestionAnswering`` checkpoints), e.g. ``lxmert.encoder.x_layers.0.visual_attention.att.query.weight``.
The ``"encoder"`` pruning scope selects the ``nn.Linear`` weights of the language, vision and cross layers plus
``lxmert.pooler.dense.weight``; never the embeddings nor the visual feature encoder ``lxmert.encoder.visn_fc.*``.

Batch keys read by :meth:`Lxmert.forward`:

=====================  ==================  ==================================================================
key                    shape / dtype       meaning
=====================  ==================  ==================================================================
``input_ids``          ``[B, T]`` long     word-piece ids (``[CLS] ... [SEP]``), padded with ``pad_token_id``
``attention_mask``     ``[B, T]``          1 at real text tokens (default: ``input_ids != pad_token_id``)
``token_type_ids``     ``[B, T]`` long     optional (default 0)
``img_feat``           ``[B, R, img_dim]`` region features -> ``visual_feats`` (required)
``img_pos_feat``       ``[B, R, >=4]``     normalised boxes; the first 4 columns ``[x1, y1, x2, y2]`` ->
                                           ``visual_pos``
``img_attention_mask`` ``[B, R]``          1 at real regions (default: all) -> ``visual_attention_mask``
=====================  ==================  ==================================================================

Example:
    >>> import torch
    >>> model = Lxmert("tiny", img_dim=12)
    >>> batch = {"input_ids": torch.tensor([[101, 7, 8, 102]]), "img_feat": torch.randn(1, 3, 12),
    ...          "img_pos_feat": torch.rand(1, 3, 7)}
    >>> out = model(batch)
    >>> out.sequence.shape, out.pooled.shape, out.image_mask.tolist()
    (torch.Size([1, 7, 32]), torch.Size([1, 32]), [[False, False, False, False, True, True, True]])
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch
from transformers import LxmertConfig, LxmertModel

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

__all__ = ["PRESETS", "Lxmert"]

#: Architecture presets (``LxmertConfig`` fields). ``base`` is LXMERT as in ``unc-nlp/lxmert-base-uncased``
#: (BERT-base uncased vocabulary, 9 language / 5 vision / 5 cross layers), ``tiny`` is for tests.
PRESETS: dict[str, dict[str, Any]] = {
    "base": dict(
        vocab_size=30522,
        hidden_size=768,
        num_attention_heads=12,
        intermediate_size=3072,
        l_layers=9,
        r_layers=5,
        x_layers=5,
        max_position_embeddings=512,
    ),
    "tiny": dict(
        vocab_size=1000,
        hidden_size=32,
        num_attention_heads=4,
        intermediate_size=64,
        l_layers=2,
        r_layers=1,
        x_layers=1,
        max_position_embeddings=64,
    ),
}

#: Keys of ``LxmertForPreTraining`` / ``LxmertForQuestionAnswering`` heads: unexpected but harmless.
_HEAD_PREFIXES = ("cls.", "obj_predict_head.", "answer_head.")


class Lxmert(VLBackbone):
    """Two-stream LXMERT backbone wrapping ``transformers.LxmertModel`` (stored as ``self.lxmert``).

    Args:
        preset: architecture defaults, ``"base"`` (9/5/5 layers, 768, 12 heads, 3072, vocab 30522) or ``"tiny"``
            (2/1/1 layers, 32, tests). With ``pretrained_path`` the checkpoint's ``config.json`` decides instead.
        img_dim: region feature dimension (``LxmertConfig.visual_feat_dim``). ``None``: 2048, or the checkpoint's
            ``visual_feat_dim`` when ``pretrained_path`` is given (a different value raises ``ValueError``).
        pretrained_path: transformers LXMERT checkpoint (``LxmertModel``, ``LxmertForPreTraining`` or
            ``LxmertForQuestionAnswering``): a local directory (``config.json`` +
            ``model.safetensors`` / ``pytorch_model.bin``, as written by ``save_pretrained``), ``"package:<module>"``
            or a Hugging Face hub id such as ``"unc-nlp/lxmert-base-uncased"``, found in the hub cache or downloaded
            like ``from_pretrained`` does (``HF_HUB_OFFLINE=1`` honoured:
            :func:`~lightning_tickets.paths.resolve_pretrained_path`), then loaded with ``LxmertModel.from_pretrained``.
            Missing / unexpected keys are logged and kept in :attr:`load_reports`.
        config_overrides: extra ``LxmertConfig`` fields (e.g. ``{"hidden_dropout_prob": 0.0}``), usable from yaml.
        **overrides: same as ``config_overrides``, as keyword arguments.

    Attributes:
        config: the ``LxmertConfig`` in use.
        load_reports: one :class:`~lightning_tickets.backbones.base.LoadReport` per checkpoint loaded (keys in
            this module's names, ``lxmert.*``; unexpected keys in the checkpoint's names).

    Example:
        >>> model = Lxmert("tiny", img_dim=8)
        >>> model.hidden_size, len(model.lxmert.encoder.layer), len(model.lxmert.encoder.x_layers)
        (32, 2, 1)
        >>> len(model.new_parameter_names()) == len(list(model.parameters()))  # random init: all new
        True
    """

    perturbable_modalities = ("text", "image")

    def __init__(
        self,
        preset: str = "base",
        img_dim: int | None = None,
        pretrained_path: str | None = None,
        config_overrides: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__()
        fields = {**(config_overrides or {}), **overrides}
        check_config_fields(LxmertConfig, fields)
        self.load_reports: list[LoadReport] = []
        if pretrained_path is None:
            if preset not in PRESETS:
                raise ValueError(f"preset={preset!r} is unknown; use one of {sorted(PRESETS)}")
            config = LxmertConfig(**{**PRESETS[preset], "visual_feat_dim": int(img_dim or 2048), **fields})
            self.lxmert = LxmertModel(config)
        else:
            directory = checkpoint_dir(pretrained_path, "lxmert")
            config = LxmertConfig.from_pretrained(str(directory), local_files_only=True)
            if img_dim is not None and int(img_dim) != config.visual_feat_dim:
                raise ValueError(
                    f"img_dim={img_dim} but the checkpoint {str(directory)!r} has visual_feat_dim="
                    f"{config.visual_feat_dim}: pass img_dim={config.visual_feat_dim} (or leave it unset)"
                )
            config.update(fields)
            layers = {"vision": config.r_layers, "cross_encoder": config.x_layers, "language": config.l_layers}
            config.num_hidden_layers = layers
            self.lxmert, report = load_hf_model(
                LxmertModel, directory, config, prefix="lxmert.", heads=_HEAD_PREFIXES, logger=log
            )
            self._record(report)
        self.config: LxmertConfig = self.lxmert.config
        self.img_dim = int(self.config.visual_feat_dim)
        self.hidden_size = int(self.config.hidden_size)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], **kwargs: Any) -> Lxmert:
        """Build from a local transformers LXMERT directory or hub id (see ``pretrained_path``).

        Example:
            >>> import tempfile
            >>> with tempfile.TemporaryDirectory() as d:
            ...     Lxmert("tiny", img_dim=8).save_pretrained(d)
            ...     model = Lxmert.from_pretrained(d)
            >>> model.img_dim, model.load_reports[0].missing_keys, model.new_parameter_names()
            (8, [], set())
        """
        return cls(pretrained_path=os.fspath(path), **kwargs)

    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        """Write the wrapped ``LxmertModel`` in transformers format (``config.json`` + ``model.safetensors``)."""
        self.lxmert.save_pretrained(os.fspath(directory))

    def _record(self, report: LoadReport) -> None:
        self.load_reports.append(report)
        params = {n for n, _ in self.named_parameters()}
        self._new_parameter_names = set(report.missing_keys) & params

    # ------------------------------------------------------------------ structure
    def structure(self) -> Structure:
        """Attention blocks and FFNs of the language, vision and cross layers (names relative to this module).

        A cross layer has three attention blocks (the shared cross attention ``visual_attention``,
        ``lang_self_att``, ``visn_self_att``) and two FFNs (``lang_inter``/``lang_output``,
        ``visn_inter``/``visn_output``).

        Example:
            >>> s = Lxmert("tiny", img_dim=8).structure()
            >>> len(s.attention), len(s.ffn), s.attention[-3].core
            (6, 5, 'lxmert.encoder.x_layers.0.visual_attention.att')
        """
        enc, attrs = "lxmert.encoder", (("num_attention_heads", "heads"), ("head_size", "all"))
        out = Structure()
        for stack in ("layer", "r_layers"):
            for i in range(len(getattr(self.lxmert.encoder, stack))):
                p = f"{enc}.{stack}.{i}"
                out = out + attention_ffn_layer(
                    self, p, "attention.self", "attention.output.dense", ("intermediate.dense", "output.dense"), attrs
                )
        for i in range(len(self.lxmert.encoder.x_layers)):
            p = f"{enc}.x_layers.{i}"
            cross = ("visual_attention.att", "visual_attention.output.dense")
            out = out + attention_ffn_layer(self, p, *cross, None, attrs)
            for side in ("lang", "visn"):
                ffn = (f"{side}_inter.dense", f"{side}_output.dense")
                out = out + attention_ffn_layer(
                    self, p, f"{side}_self_att.self", f"{side}_self_att.output.dense", ffn, attrs
                )
        return out

    # ------------------------------------------------------------------ forward
    def forward(self, batch: Mapping[str, Any]) -> BackboneOutput:
        """Encode text and regions; returns ``[language output | vision output]`` (see the module docstring)."""
        input_ids = batch["input_ids"]
        b, t = input_ids.shape
        if t > self.config.max_position_embeddings:
            raise ValueError(
                f"input_ids has {t} tokens but LXMERT has max_position_embeddings={self.config.max_position_embeddings}"
                ": truncate the text"
            )
        pad = self.config.pad_token_id if self.config.pad_token_id is not None else 0
        text_mask = batch.get("attention_mask")
        text_mask = input_ids.ne(pad) if text_mask is None else text_mask.bool()
        img_feat = batch.get("img_feat")
        if img_feat is None or batch.get("img_pos_feat") is None:
            raise KeyError("LXMERT needs region features: batch keys 'img_feat' [B, R, D] and 'img_pos_feat' [B, R, 7]")
        if img_feat.shape[-1] != self.img_dim:
            raise ValueError(f"img_feat has dimension {img_feat.shape[-1]} but the model has img_dim={self.img_dim}")
        r = img_feat.shape[1]
        img_mask = batch.get("img_attention_mask")
        img_mask = torch.ones(b, r, dtype=torch.bool, device=img_feat.device) if img_mask is None else img_mask.bool()
        dtype = self.lxmert.dtype
        words, hook = None, None
        if self.perturbing:  # adversarial training: word embeddings and projected region features (VILLA)
            words = self.perturb("text", self.lxmert.embeddings.word_embeddings(input_ids), text_mask)
            hook = self.lxmert.encoder.visn_fc.visn_layer_norm.register_forward_hook(
                lambda module, args, output: self.perturb("image", output, img_mask)
            )
        try:
            out = self.lxmert(
                input_ids=input_ids if words is None else None,
                inputs_embeds=words,
                token_type_ids=batch.get("token_type_ids"),
                attention_mask=text_mask.to(dtype),
                visual_feats=img_feat.to(dtype),
                visual_pos=batch["img_pos_feat"][..., : self.config.visual_pos_dim].to(dtype),
                visual_attention_mask=img_mask.to(dtype),
                return_dict=True,
            )
        finally:
            if hook is not None:
                hook.remove()
        sequence = torch.cat([out.language_output, out.vision_output], dim=1)
        no_text, no_img = torch.zeros_like(text_mask), torch.zeros_like(img_mask)
        is_text = torch.cat([text_mask, no_img], dim=1)
        is_image = torch.cat([no_text, img_mask], dim=1)
        return BackboneOutput(
            sequence=sequence,
            pooled=out.pooled_output,
            attention_mask=is_text | is_image,
            text_mask=is_text,
            image_mask=is_image,
        )
