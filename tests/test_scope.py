import pytest
import torch
from torch import nn

from lightning_tickets.scope import PRESETS, Scope, resolve_scope, scope_names
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


# ---------------------------------------------------------------------- classes, parameter-name regexes, biases
def _oracle(model: nn.Module, keep) -> list[str]:
    """Parameter names in named_parameters() order whose owning module and name satisfy ``keep(module, name)``."""
    owners = {}
    for mname, module in model.named_modules():
        for attr, _ in module.named_parameters(recurse=False):
            owners.setdefault(f"{mname}.{attr}" if mname else attr, module)
    return [n for n, _ in model.named_parameters() if keep(owners[n], n)]


@pytest.mark.parametrize("modules", [[nn.Linear], ["Linear"], ["torch.nn.Linear"], nn.Linear, "Linear"])
def test_modules_by_class_name_or_dotted_path(modules):
    model = ToyClassifier(num_layers=2)
    names = [n for n, _ in resolve_scope(model, {"modules": modules})]
    assert names == _oracle(model, lambda m, n: isinstance(m, nn.Linear) and n.endswith(".weight"))


def test_modules_by_class_selects_subclasses():
    class MyLinear(nn.Linear):
        pass

    model = nn.Sequential(MyLinear(2, 2), nn.Linear(2, 2), nn.Conv1d(2, 2, 1))
    assert [n for n, _ in resolve_scope(model, {"modules": [nn.Linear]})] == ["0.weight", "1.weight"]
    assert [n for n, _ in resolve_scope(model, {"modules": [MyLinear]})] == ["0.weight"]
    assert [n for n, _ in resolve_scope(model, {"modules": [nn.Linear, nn.Conv1d]})] == [
        "0.weight",
        "1.weight",
        "2.weight",
    ]


def test_bad_module_entries_are_clear_errors():
    with pytest.raises(ValueError, match="'torch.nn.Linaer' cannot be imported"):
        Scope.parse({"modules": ["torch.nn.Linaer"]})
    with pytest.raises(ValueError, match="not an nn.Module subclass"):
        Scope.parse({"modules": [int]})
    with pytest.raises(ValueError, match=r"module classes: .*Linear") as err:
        resolve_scope(ToyClassifier(), {"modules": ["Conv2d"]})
    assert "Conv2d" in str(err.value)


def test_include_and_exclude_regexes_over_parameter_names():
    model = ToyClassifier(num_layers=2)
    by_param = [n for n, _ in resolve_scope(model, {"include": [r"encoder\..*\.weight$"]})]
    assert by_param == _oracle(
        model, lambda m, n: isinstance(m, nn.Linear) and n.startswith("encoder.") and n.endswith(".weight")
    )
    assert by_param == [n for n, _ in resolve_scope(model, {"include": [r"^encoder\."]})]  # the module-name form
    excluded = [n for n, _ in resolve_scope(model, {"include": [".*"], "exclude": [r"output\.dense\.weight$"]})]
    assert excluded == _oracle(
        model, lambda m, n: isinstance(m, nn.Linear) and n.endswith(".weight") and "output.dense" not in n
    )


@pytest.mark.parametrize("how", ["dict", "keyword", "preset"])
def test_parameter_names_prune_biases_too(how):
    model = ToyClassifier(num_layers=2)
    if how == "dict":
        got = resolve_scope(model, {"include": [".*"], "parameter_names": ["weight", "bias"]})
        expected = _oracle(model, lambda m, n: isinstance(m, nn.Linear))
    elif how == "keyword":
        got = resolve_scope(model, {"include": [".*"]}, parameter_names=["bias"])
        expected = _oracle(model, lambda m, n: isinstance(m, nn.Linear) and n.endswith(".bias"))
    else:
        got = resolve_scope(model, "encoder", parameter_names=["weight", "bias"])
        weights = set(scope_names(model, "encoder"))
        expected = _oracle(model, lambda m, n: n.rsplit(".", 1)[0] + ".weight" in weights)
    assert [n for n, _ in got] == expected and any(n.endswith(".bias") for n in expected)
    params = dict(model.named_parameters())
    assert all(p is params[n] for n, p in got)


def test_bias_excluded_by_a_parameter_name_regex_and_bad_parameter_names():
    model = ToyClassifier(num_layers=1)
    spec = {"include": [".*"], "exclude": [r"\.bias$"], "parameter_names": ["weight", "bias"]}
    with pytest.raises(ValueError, match=r"parameter_names \['bias'\] match no parameter"):
        resolve_scope(model, spec)
    with pytest.raises(ValueError, match=r"parameter_names \['bais'\] match no parameter"):
        resolve_scope(model, {"parameter_names": ["weight", "bais"]})
    with pytest.raises(ValueError, match="attribute names"):
        Scope.parse({"parameter_names": ["weight.x"]})


def test_to_dict_round_trips_classes_and_parameter_names():
    scope = Scope.parse({"include": ["layer"], "modules": [nn.Linear], "parameter_names": ["weight", "bias"]})
    data = scope.to_dict()
    assert data["modules"] == ["torch.nn.modules.linear.Linear"] and data["parameter_names"] == ["weight", "bias"]
    model = ToyClassifier(num_layers=2)
    assert scope_names(model, Scope.parse(data)) == scope_names(model, scope)
    assert Scope.parse("encoder").to_dict()["parameter_names"] == ["weight"]


def test_callback_prunes_biases_through_a_scope_dict(tmp_path):
    """The callback passes a scope dict through: classes and parameter_names reach the masks and the metadata."""
    import lightning as L

    from lightning_tickets import LotteryTicketCallback, Ticket
    from lightning_tickets.toy import ToyDataModule

    L.seed_everything(0)
    scope = {"include": [r"^encoder\."], "modules": [nn.Linear], "parameter_names": ["weight", "bias"]}
    cb = LotteryTicketCallback(
        target_sparsity=0.5, schedule=[0.5], epochs_per_round=1, scope=scope, ticket_dir=tmp_path, monitor="val/acc"
    )
    model = ToyClassifier(num_layers=1)
    trainer = L.Trainer(
        max_epochs=2,
        callbacks=[cb],
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.fit(model, ToyDataModule(num_samples=128))
    ticket = Ticket.load(tmp_path / "round-01.safetensors")
    assert sorted(ticket.masks) == sorted(scope_names(model, scope))
    assert any(n.endswith(".bias") for n in ticket.masks)
    assert ticket.metadata["scope"]["parameter_names"] == ["weight", "bias"]
    assert ticket.metadata["scope"]["modules"] == ["torch.nn.modules.linear.Linear"]
    params = dict(model.named_parameters())
    for name, mask in ticket.masks.items():  # the pruned entries are zero in the model, biases included
        assert bool((params[name].detach()[~mask] == 0).all()), name
