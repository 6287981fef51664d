"""The `lightning-tickets ticket ...` tools on generated tickets."""

import json

import pytest
import torch
from safetensors.torch import load_file

from lightning_tickets.baselines import one_shot_ticket, random_ticket
from lightning_tickets.ticket import Ticket
from lightning_tickets.tools import main
from lightning_tickets.toy import ToyClassifier


@pytest.fixture
def tickets(tmp_path):
    torch.manual_seed(0)
    model = ToyClassifier()
    a = one_shot_ticket(model, 0.5)
    b = one_shot_ticket(model, 0.8)
    r = random_ticket(b, matched=True, seed=0)
    for name, t in (("a", a), ("b", b), ("r", r)):
        t.save(tmp_path / f"{name}.safetensors")
    torch.save({"state_dict": model.state_dict()}, tmp_path / "model.ckpt")
    return tmp_path, model, a, b, r


def test_info_table_and_json(tickets, capsys):
    d, _, a, *_ = tickets
    assert main(["info", str(d / "a.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "sparsity 50.0000%" in out and "encoder.layer.0.intermediate.dense.weight" in out
    assert main(["info", str(d / "a.safetensors"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["sparsity"] == pytest.approx(a.sparsity) and len(data["tensors"]) == len(a.masks)


def test_compare_matrix_png_and_json(tickets, capsys):
    d, _, a, b, r = tickets
    rc = main(
        [
            "compare",
            *(str(d / f"{n}.safetensors") for n in "abr"),
            "--png",
            str(d / "o.png"),
            "--json",
            str(d / "o.json"),
        ]
    )
    assert rc == 0
    m = json.loads((d / "o.json").read_text())["iou"]
    assert m[0][1] == pytest.approx(a.overlap(b)["global"]) and m[1][2] == pytest.approx(b.overlap(r)["global"])
    # nested magnitude tickets overlap: kept(b) is a subset of kept(a) -> IoU = kept_b / kept_a
    assert m[0][1] == pytest.approx((b.num_weights - b.num_pruned) / (a.num_weights - a.num_pruned))
    assert (d / "o.png").stat().st_size > 1000


def test_compare_different_models_names_tensors(tickets, capsys):
    d, *_ = tickets
    Ticket({"other.weight": torch.ones(3, dtype=torch.bool)}).save(d / "x.safetensors")
    assert main(["compare", str(d / "a.safetensors"), str(d / "x.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "other.weight" in err and "encoder.layer.0.intermediate.dense.weight" in err


def test_apply_writes_plain_pruned_state_dict(tickets, capsys):
    d, model, a, *_ = tickets
    assert main(["apply", str(d / "a.safetensors"), str(d / "model.ckpt"), str(d / "pruned.safetensors")]) == 0
    sd = load_file(str(d / "pruned.safetensors"))
    plain = ToyClassifier()
    plain.load_state_dict(sd)  # loads without the library
    for n, m in a.masks.items():
        assert bool((sd[n][~m] == 0).all()) and torch.equal(sd[n][m], model.state_dict()[n][m])
    # remap: checkpoint keys carry a prefix
    torch.save({f"net.{k}": v for k, v in model.state_dict().items()}, d / "prefixed.pt")
    assert main(["apply", str(d / "a.safetensors"), str(d / "prefixed.pt"), str(d / "p.pt")]) == 2
    assert "--remap" in capsys.readouterr().err
    assert main(["apply", str(d / "a.safetensors"), str(d / "prefixed.pt"), str(d / "p.pt"), "--remap", "=net."]) == 0


def test_plot_overlays_runs(tmp_path, capsys):
    def summary(scores, method):
        rows = [{"round": i, "sparsity": s, "score": v} for i, (s, v) in enumerate(scores)]
        return {
            "monitor": "val/acc",
            "mode": "max",
            "tolerance": 0.99,
            "dense_score": scores[0][1],
            "rounds": rows,
            "method": method,
            "best_relaxed_ticket": rows[1],
        }

    (tmp_path / "imp.json").write_text(json.dumps(summary([(0, 0.9), (0.5, 0.9), (0.7, 0.85)], "magnitude")))
    (tmp_path / "rp.json").write_text(json.dumps(summary([(0, 0.9), (0.5, 0.8), (0.7, 0.7)], "random")))
    out = tmp_path / "p.png"
    assert (
        main(
            ["plot", str(tmp_path / "imp.json"), str(tmp_path / "rp.json"), "--labels", "IMP", "RP", "--out", str(out)]
        )
        == 0
    )
    assert out.stat().st_size > 1000


def test_console_script_dispatch(tickets, capsys):
    from lightning_tickets.cli import main as cli_main

    d, *_ = tickets
    with pytest.raises(SystemExit) as e:
        cli_main(["ticket", "info", str(d / "a.safetensors")])
    assert e.value.code == 0
    with pytest.raises(SystemExit) as e:
        cli_main(["ticket", "info", str(d / "missing.safetensors")])
    assert e.value.code == 2 and "missing.safetensors" in capsys.readouterr().err
