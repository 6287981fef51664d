"""Tickets across ``torch.compile``: written with plain names, applied to compiled and plain models alike."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn

from lightning_tickets import LotteryTicketCallback, Ticket, TicketError
from lightning_tickets.scope import scope_names
from lightning_tickets.ticket_format import plain_name
from lightning_tickets.toy import ToyClassifier, ToyDataModule


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def _half_ticket(model):
    masks = {n: torch.rand(p.shape, generator=torch.Generator().manual_seed(1)) > 0.5 for n, p in
             model.named_parameters() if p.dim() == 2}  # fmt: skip
    return Ticket(masks)


def test_compiled_module_names_have_orig_mod():
    """The premise: torch.compile wraps the module (no compilation happens before the first forward)."""
    compiled = torch.compile(_net())
    assert [n for n, _ in compiled.named_parameters()][0] == "_orig_mod.0.weight"


def test_ticket_of_compiled_model_applies_to_plain_model_and_back():
    plain, compiled = _net(), torch.compile(_net())
    from_compiled = Ticket.from_model(compiled)
    assert list(from_compiled.masks) == ["0.weight", "2.weight"]  # written with plain names
    ticket = _half_ticket(compiled)  # a ticket whose names still carry _orig_mod.
    assert list(ticket.masks) == ["_orig_mod.0.weight", "_orig_mod.2.weight"]
    applied = ticket.apply(plain)
    assert list(applied) == ["0.weight", "2.weight"]
    for name, mask in ticket.masks.items():
        w = dict(plain.named_parameters())[plain_name(name)]
        assert not w[~mask].any() and bool(w[mask].ne(0).all())
    back = _half_ticket(_net()).apply(compiled)  # plain names onto the compiled model
    assert list(back) == ["_orig_mod.0.weight", "_orig_mod.2.weight"]
    assert not compiled._orig_mod[0].weight[~_half_ticket(_net()).masks["0.weight"]].any()


def test_compiled_names_still_checked_for_shape_and_missing_names():
    ticket = Ticket({"_orig_mod.0.weight": torch.ones(3, 3, dtype=torch.bool)})
    with pytest.raises(TicketError, match="shape mismatch"):
        ticket.apply(_net())
    with pytest.raises(TicketError, match="no matching parameter"):
        Ticket({"_orig_mod.9.weight": torch.ones(8, 4, dtype=torch.bool)}).apply(_net())


def test_scope_regexes_select_the_same_parameters_of_a_compiled_submodule():
    model = ToyClassifier(num_layers=2)
    spec = {"include": [r"^encoder\.layer\.0\."]}
    plain = scope_names(model, spec)
    model.encoder.layer[0] = torch.compile(model.encoder.layer[0])
    compiled = scope_names(model, spec)
    assert [plain_name(n) for n in compiled] == plain and len(plain) == 2
    assert all("._orig_mod." in n for n in compiled)


def test_imp_on_a_model_with_a_compiled_block_writes_plain_tickets(tmp_path):
    torch.manual_seed(0)
    model = ToyClassifier(num_layers=2)
    model.encoder.layer[0] = torch.compile(model.encoder.layer[0], backend="eager")  # no C++ toolchain needed
    cb = LotteryTicketCallback(
        target_sparsity=0.5, rate=0.5, epochs_per_round=1, monitor="val/acc", ticket_dir=str(tmp_path), plot=False
    )
    L.Trainer(
        accelerator="cpu", max_epochs=2, callbacks=[cb], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    ).fit(model, ToyDataModule(num_samples=128, batch_size=64))  # fmt: skip
    ticket = Ticket.load(tmp_path / "round-01.safetensors")
    assert not any("_orig_mod" in n for n in ticket.masks)
    assert "encoder.layer.0.intermediate.dense.weight" in ticket.masks and ticket.sparsity == pytest.approx(0.5)
    plain = ToyClassifier(num_layers=2)
    assert sorted(ticket.apply(plain)) == sorted(ticket.masks)  # strict: every name found in the plain model
    trained = dict(model.named_parameters())
    for name, mask in ticket.masks.items():  # the ticket is the compiled model's mask
        compiled_name = name.replace("layer.0.", "layer.0._orig_mod.")
        assert torch.equal(trained[compiled_name] != 0, mask)
