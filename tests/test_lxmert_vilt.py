"""LXMERT and ViLT backbones: shapes, masks, encoder scope, local checkpoints, offline errors, gradients, IMP."""

from __future__ import annotations

import logging

import lightning as L
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset
from transformers import LxmertForPreTraining, LxmertModel, ViltForMaskedLM, ViltModel

from lightning_tickets import LotteryTicketCallback
from lightning_tickets.backbones.base import BackboneOutput, VLBackbone
from lightning_tickets.backbones.lxmert import Lxmert
from lightning_tickets.backbones.vilt import Vilt
from lightning_tickets.scope import resolve_scope, scope_names

T, R, IMG_DIM = 5, 3, 12


def _lx_batch(b: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 900, (b, T), generator=g)
    ids[:, 0] = 101
    attn = torch.ones(b, T, dtype=torch.long)
    attn[1:, 3:] = 0  # later examples: 3 real tokens
    ids[1:, 3:] = 0
    img_mask = torch.ones(b, R, dtype=torch.long)
    img_mask[0, 2:] = 0  # first example: 2 real regions
    return {
        "input_ids": ids,
        "attention_mask": attn,
        "token_type_ids": torch.zeros(b, T, dtype=torch.long),
        "img_feat": torch.randn(b, R, IMG_DIM, generator=g),
        "img_pos_feat": torch.rand(b, R, 7, generator=g),
        "img_attention_mask": img_mask,
    }


def _vilt_batch(b: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 900, (b, T), generator=g)
    ids[:, 0] = 101
    attn = torch.ones(b, T, dtype=torch.long)
    attn[1:, 3:] = 0
    ids[1:, 3:] = 0
    pixel_mask = torch.ones(b, 64, 64, dtype=torch.long)
    pixel_mask[1:, :, 32:] = 0  # later images: left half real -> 4x2 = 8 of 16 patches
    pixel_values = torch.randn(b, 3, 64, 64, generator=g) * pixel_mask[:, None]
    return {"input_ids": ids, "attention_mask": attn, "pixel_values": pixel_values, "pixel_mask": pixel_mask}


def _lxmert(**kw) -> Lxmert:
    torch.manual_seed(0)
    return Lxmert("tiny", img_dim=IMG_DIM, **kw).eval()


def _vilt(**kw) -> Vilt:
    torch.manual_seed(0)
    return Vilt("tiny", **kw).eval()


def _perturb(model: torch.nn.Module) -> None:
    """Make every tensor distinct from a fresh init (so a failed load cannot go unnoticed)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))


# ---------------------------------------------------------------------- forward, masks
def test_lxmert_forward_shapes_masks_and_matches_lxmert_model():
    model = _lxmert()
    assert isinstance(model, VLBackbone) and model.hidden_size == 32
    batch = _lx_batch()
    with torch.no_grad():
        out = model(batch)
        ref = model.lxmert(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            visual_feats=batch["img_feat"],
            visual_pos=batch["img_pos_feat"][..., :4],
            visual_attention_mask=batch["img_attention_mask"],
        )
    assert isinstance(out, BackboneOutput)
    assert out.sequence.shape == (2, T + R, 32) and out.pooled.shape == (2, 32)
    assert out.attention_mask.tolist() == [[1, 1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 1, 1, 1]]
    assert out.text_mask.tolist() == [[1, 1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0, 0, 0]]
    assert out.image_mask.tolist() == [[0, 0, 0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 0, 1, 1, 1]]
    assert all(m.dtype == torch.bool for m in (out.attention_mask, out.text_mask, out.image_mask))
    torch.testing.assert_close(out.sequence[:, :T], ref.language_output, atol=0, rtol=0)
    torch.testing.assert_close(out.sequence[:, T:], ref.vision_output, atol=0, rtol=0)
    torch.testing.assert_close(out.pooled, ref.pooled_output, atol=0, rtol=0)
    with pytest.raises(KeyError, match="img_feat"):
        model({"input_ids": batch["input_ids"]})
    with pytest.raises(ValueError, match="img_dim=12"):
        model({**batch, "img_feat": torch.zeros(2, R, 7)})


def test_vilt_forward_shapes_masks_and_matches_vilt_model():
    model = _vilt()
    batch = _vilt_batch()
    with torch.no_grad():
        out = model(batch)
        ref = model.vilt(**batch)
    # [text (5) | image CLS | 16 patches]; image 2 has 8 real patches, padding patches last
    assert out.sequence.shape == (2, T + 17, 32) and out.pooled.shape == (2, 32)
    assert ref.last_hidden_state.shape == out.sequence.shape  # same layout as ViltModel
    assert out.text_mask.tolist() == [[1] * 5 + [0] * 17, [1] * 3 + [0] * 19]
    assert out.image_mask.tolist() == [[0] * 5 + [1] * 17, [0] * 5 + [1] * 9 + [0] * 8]
    assert torch.equal(out.attention_mask, out.text_mask | out.image_mask)
    assert not (out.text_mask & out.image_mask).any()
    torch.testing.assert_close(out.pooled, ref.pooler_output, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.sequence[0, :T], ref.last_hidden_state[0, :T], atol=1e-6, rtol=1e-5)
    # ViltModel returns the sampled patches in random order; ours are in raster order (same values)
    ours, theirs = out.sequence[0, T:].sort(dim=0).values, ref.last_hidden_state[0, T:].sort(dim=0).values
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # deterministic: the patch sampling order does not leak into the output
        again = model(batch)
    torch.testing.assert_close(again.sequence[again.attention_mask], out.sequence[out.attention_mask])


def test_vilt_text_too_long_and_missing_pixels():
    model = _vilt()
    batch = _vilt_batch()
    with pytest.raises(ValueError, match="max_position_embeddings=40"):
        model({**batch, "input_ids": torch.ones(2, 41, dtype=torch.long), "attention_mask": None})
    with pytest.raises(KeyError, match="pixel_values"):
        model({"input_ids": batch["input_ids"]})


def test_vilt_image_token_type_idx_changes_output():
    model = _vilt(modality_type_vocab_size=3)
    batch = _vilt_batch()
    with torch.no_grad():
        one = model(batch).pooled
        two = model({**batch, "image_token_type_idx": 2}).pooled
        mixed = model({**batch, "image_token_type_idx": torch.tensor([1, 2])}).pooled
        ctor = Vilt("tiny", modality_type_vocab_size=3, image_token_type_idx=2)
        ctor.load_state_dict(model.state_dict())
        two_ctor = ctor.eval()(batch).pooled
    assert not torch.allclose(one, two)
    torch.testing.assert_close(mixed[0], one[0])
    torch.testing.assert_close(mixed[1], two[1])
    torch.testing.assert_close(two_ctor, two)
    with pytest.raises(ValueError, match="modality_type_vocab_size=3"):
        _vilt()({**batch, "image_token_type_idx": 2})


# ---------------------------------------------------------------------- encoder scope
def _layer_names(prefix: str, attn: str) -> list[str]:
    subs = [f"{attn}.query", f"{attn}.key", f"{attn}.value", "attention.output.dense"]
    return [f"{prefix}.{s}.weight" for s in subs + ["intermediate.dense", "output.dense"]]


def test_lxmert_encoder_scope_exact():
    model = _lxmert()
    selected = scope_names(model, "encoder")
    expected = _layer_names("lxmert.encoder.layer.0", "attention.self")
    expected += _layer_names("lxmert.encoder.layer.1", "attention.self")
    expected += _layer_names("lxmert.encoder.r_layers.0", "attention.self")
    x = "lxmert.encoder.x_layers.0"
    for att in ("visual_attention.att", "lang_self_att.self", "visn_self_att.self"):
        expected += [f"{x}.{att}.{p}.weight" for p in ("query", "key", "value")]
    expected += [f"{x}.{a}.output.dense.weight" for a in ("visual_attention", "lang_self_att", "visn_self_att")]
    expected += [f"{x}.{f}.dense.weight" for f in ("lang_inter", "lang_output", "visn_inter", "visn_output")]
    expected += ["lxmert.pooler.dense.weight"]
    assert sorted(selected) == sorted(expected)
    count = {k: sum(f".{k}." in n for n in selected) for k in ("layer", "r_layers", "x_layers")}
    assert count == {"layer": 2 * 6, "r_layers": 6, "x_layers": 16}
    assert not any("visn_fc" in n or "embeddings" in n for n in selected)
    assert "lxmert.encoder.visn_fc.visn_fc.weight" in dict(model.named_parameters())  # exists, not prunable


def test_vilt_encoder_scope_exact():
    model = _vilt()
    selected = scope_names(model, "encoder")
    expected = [n for i in range(2) for n in _layer_names(f"vilt.encoder.layer.{i}", "attention.attention")]
    assert sorted(selected) == sorted(expected + ["vilt.pooler.dense.weight"])
    assert not any("embeddings" in n for n in selected)


# ---------------------------------------------------------------------- local checkpoints
def test_lxmert_loads_local_transformers_checkpoint(tmp_path, caplog):
    src = _lxmert()
    hf = LxmertForPreTraining(src.config).eval()  # keys "lxmert.*" + pre-training heads
    _perturb(hf)
    hf.save_pretrained(tmp_path)
    with caplog.at_level(logging.INFO, logger="lightning_tickets.backbones.lxmert"):
        model = Lxmert.from_pretrained(tmp_path).eval()
    report = model.load_reports[0]
    assert report.missing_keys == [] and "cls.predictions.bias" in report.unexpected_keys
    assert "pre-training/task head" in caplog.text and model.new_parameter_names() == set()
    assert model.img_dim == IMG_DIM and len(model.lxmert.encoder.layer) == 2  # architecture from config.json
    batch = _lx_batch()
    with torch.no_grad():
        out = model(batch)
        ref = hf.lxmert(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            visual_feats=batch["img_feat"],
            visual_pos=batch["img_pos_feat"][..., :4],
            visual_attention_mask=batch["img_attention_mask"],
        )
    torch.testing.assert_close(out.sequence, torch.cat([ref.language_output, ref.vision_output], 1), atol=0, rtol=0)
    torch.testing.assert_close(out.pooled, ref.pooled_output, atol=0, rtol=0)
    with pytest.raises(ValueError, match="visual_feat_dim=12"):
        Lxmert(pretrained_path=str(tmp_path), img_dim=2048)
    with pytest.raises(ValueError, match="different shape"):
        Lxmert(pretrained_path=str(tmp_path), intermediate_size=48)


def test_lxmert_missing_keys_are_reported(tmp_path, caplog):
    src = _lxmert()
    src.save_pretrained(tmp_path)
    assert isinstance(LxmertModel.from_pretrained(tmp_path), LxmertModel)  # plain transformers format
    sd = load_file(tmp_path / "model.safetensors")
    del sd["pooler.dense.weight"]
    sd["extra.weight"] = torch.zeros(2)
    save_file(sd, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with caplog.at_level(logging.WARNING, logger="lightning_tickets.backbones.lxmert"):
        model = Lxmert.from_pretrained(tmp_path)
    report = model.load_reports[0]
    assert report.missing_keys == ["lxmert.pooler.dense.weight"] and report.unexpected_keys == ["extra.weight"]
    assert "missing" in caplog.text and "extra.weight" in caplog.text
    assert model.new_parameter_names() == {"lxmert.pooler.dense.weight"}


def test_vilt_loads_local_transformers_checkpoint(tmp_path):
    src = _vilt()
    hf = ViltForMaskedLM(src.config).eval()  # keys "vilt.*" + MLM head
    _perturb(hf)
    hf.save_pretrained(tmp_path)
    model = Vilt.from_pretrained(tmp_path).eval()
    report = model.load_reports[0]
    assert report.missing_keys == [] and any(k.startswith("mlm_score.") for k in report.unexpected_keys)
    assert model.new_parameter_names() == set()
    batch = _vilt_batch()
    with torch.no_grad():
        out = model(batch)
        ref = hf.vilt(**batch)
    torch.testing.assert_close(out.pooled, ref.pooler_output, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.sequence[:, :T], ref.last_hidden_state[:, :T], atol=1e-6, rtol=1e-5)
    # NLVR2: a third modality type on top of a 2-type checkpoint starts as a copy of the image type
    nlvr = Vilt.from_pretrained(tmp_path, modality_type_vocab_size=3)
    w = nlvr.vilt.embeddings.token_type_embeddings.weight
    torch.testing.assert_close(w[:2], hf.vilt.embeddings.token_type_embeddings.weight, atol=0, rtol=0)
    torch.testing.assert_close(w[2], w[1], atol=0, rtol=0)
    assert nlvr.new_parameter_names() == set() and isinstance(ViltModel.from_pretrained(tmp_path), ViltModel)


@pytest.mark.parametrize("cls", [Lxmert, Vilt])
@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("unc-nlp/lxmert-base-uncased", "HF_HUB_OFFLINE=1 forbids downloading"),  # offline, not cached
        ("dandelin/vilt-b32-mlm", "HF_HUB_OFFLINE=1 forbids downloading"),
        ("/no/such/dir", "neither an existing local path nor a Hugging Face hub id"),
    ],
)
def test_uncached_hub_id_offline_or_missing_path_is_a_clear_error(cls, bad, message, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=message):
        cls.from_pretrained(bad)


def test_wrong_checkpoint_kind_and_bad_arguments(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match="'bert' model, not 'vilt'"):
        Vilt.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        (tmp_path / "empty").mkdir()
        Lxmert.from_pretrained(tmp_path / "empty")
    with pytest.raises(ValueError, match="preset"):
        Lxmert("huge")
    with pytest.raises(ValueError, match="unknown ViltConfig"):
        Vilt("tiny", hiden_size=3)


# ---------------------------------------------------------------------- training
@pytest.mark.parametrize("name", ["lxmert", "vilt"])
def test_gradients_reach_every_prunable_weight(name):
    model = (_lxmert() if name == "lxmert" else _vilt()).train()
    out = model(_lx_batch() if name == "lxmert" else _vilt_batch())
    (out.pooled.sum() + out.sequence[out.attention_mask].pow(2).mean()).backward()
    for n, p in resolve_scope(model, "encoder"):
        assert p.grad is not None and p.grad.abs().sum() > 0, n


class _Random(Dataset):
    def __init__(self, name: str, n: int = 8) -> None:
        self.items = []
        for i in range(n):
            b = _lx_batch(1, seed=i) if name == "lxmert" else _vilt_batch(1, seed=i)
            self.items.append({k: v[0] for k, v in b.items()} | {"labels": torch.tensor(i % 2)})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.items[i]


class _Classifier(L.LightningModule):
    def __init__(self, backbone: VLBackbone) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = torch.nn.Linear(backbone.hidden_size, 2)

    def training_step(self, batch, batch_idx):
        logits = self.head(self.backbone(batch).pooled)
        return torch.nn.functional.cross_entropy(logits, batch["labels"])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("name", ["lxmert", "vilt"])
def test_lottery_ticket_callback_prunes_backbone(name, tmp_path):
    torch.manual_seed(0)
    module = _Classifier(Lxmert("tiny", img_dim=IMG_DIM) if name == "lxmert" else Vilt("tiny"))
    cb = LotteryTicketCallback(
        0.5, rate=0.5, epochs_per_round=1, monitor=None, ticket_dir=str(tmp_path / "tickets"), plot=False
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        callbacks=[cb],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, DataLoader(_Random(name), batch_size=4))
    masks = cb.masks
    assert masks is not None and sorted(masks) == sorted(scope_names(module, "encoder"))
    assert not any(n.startswith("head.") for n in masks)
    kept = sum(int(m.sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    assert abs(1 - kept / total - 0.5) < 1e-3
    params = dict(module.named_parameters())
    for n, m in masks.items():
        assert torch.count_nonzero(params[n].detach()[~m]) == 0, n
