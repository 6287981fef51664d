import pytest
import torch
from torch import nn

from lightning_tickets.scope import PRESETS, Scope, resolve_scope
from lightning_tickets.toy import ToyClassifier


def _tiny_bert():
    from transformers import BertConfig, BertModel

    cfg = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    return BertModel(cfg)


def test_encoder_preset_on_bert_matches_bert_tickets_layers():
    names = [n for n, _ in resolve_scope(_tiny_bert(), "encoder")]
    expected = []
    for i in range(2):
        for sub in (
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
            "intermediate.dense",
            "output.dense",
        ):
            expected.append(f"encoder.layer.{i}.{sub}.weight")
    expected.append("pooler.dense.weight")
    assert names == expected


def test_encoder_preset_never_embeddings_layernorm_bias_or_head():
    class WithHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = _tiny_bert()
            self.head = nn.Sequential(nn.Linear(16, 32), nn.Linear(32, 3))

    names = [n for n, _ in resolve_scope(WithHead(), "encoder")]
    assert names and all(n.startswith("backbone.encoder.layer.") or n == "backbone.pooler.dense.weight" for n in names)
    assert not any("embeddings" in n or "LayerNorm" in n or n.endswith("bias") or "head" in n for n in names)


def test_toy_and_lxmert_style_names():
    assert [n for n, _ in resolve_scope(ToyClassifier(num_layers=1), "encoder")] == [
        "encoder.layer.0.intermediate.dense.weight",
        "encoder.layer.0.output.dense.weight",
        "pooler.dense.weight",
    ]

    class Lx(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Module()
            for part in ("layer", "r_layers", "x_layers"):
                setattr(self.encoder, part, nn.ModuleList([nn.Linear(2, 2)]))
            self.encoder.visn_fc = nn.Linear(2048, 2)  # visual feature projection: an embedding, not a layer

    assert [n for n, _ in resolve_scope(Lx(), "encoder")] == [
        "encoder.layer.0.weight",
        "encoder.r_layers.0.weight",
        "encoder.x_layers.0.weight",
    ]


def test_custom_scope_dict():
    m = ToyClassifier(num_layers=2)
    names = [n for n, _ in resolve_scope(m, {"include": [r"intermediate"], "exclude": [r"layer\.1\."]})]
    assert names == ["encoder.layer.0.intermediate.dense.weight"]
    names = [n for n, _ in resolve_scope(m, {"include": [".*"], "modules": ["LayerNorm"]})]
    assert names == ["encoder.layer.0.norm.weight", "encoder.layer.1.norm.weight"]


def test_scope_matching_nothing_lists_parameter_names():
    with pytest.raises(ValueError, match=r"matches no parameter.*embeddings\.weight"):
        resolve_scope(ToyClassifier(), {"include": ["does-not-exist"]})


def test_bad_scope_specs():
    with pytest.raises(ValueError, match="scope='decoder' is not a preset"):
        Scope.parse("decoder")
    with pytest.raises(ValueError, match="unknown keys"):
        Scope.parse({"incl": ["x"]})
    with pytest.raises(ValueError, match="regex"):
        Scope.parse({"include": ["("]})
    assert set(PRESETS) >= {"encoder", "linear", "all"}


def test_shared_weights_counted_once():
    lin = nn.Linear(3, 3)

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([lin, lin])

    assert len(resolve_scope(Tied(), "encoder")) == 1
    assert isinstance(resolve_scope(Tied(), "encoder")[0][1], torch.nn.Parameter)
