import pytest
import torch

from lightning_tickets import LotteryTicketCallback, TicketError
from lightning_tickets.baselines import load_weights, one_shot_ticket, random_ticket, reinit_weights, shuffle_weights
from lightning_tickets.masks import global_magnitude_masks
from lightning_tickets.scope import resolve_scope
from lightning_tickets.toy import ToyClassifier, ToyDataModule


def _ticket(seed=0, s=0.7):
    torch.manual_seed(seed)
    model = ToyClassifier()
    return model, one_shot_ticket(model, s)


def test_one_shot_equals_global_magnitude_on_theta0():
    model, t = _ticket()
    ref = global_magnitude_masks(dict(resolve_scope(model, "encoder")), None, 0.7)
    assert t.masks.keys() == ref.keys() and all(torch.equal(t.masks[n], ref[n]) for n in ref)
    assert t.metadata["baseline"] == "one_shot"


def test_random_ticket_exact_sparsity_global_and_layerwise_matched():
    _, t = _ticket()
    rg = random_ticket(t, matched=False, seed=1)
    assert rg.num_pruned == t.num_pruned
    assert rg.tensor_sparsity() != t.tensor_sparsity()  # global: per-tensor sparsities differ
    rm = random_ticket(t, matched=True, seed=1)
    assert rm.tensor_sparsity() == t.tensor_sparsity()  # exactly, per tensor
    assert rm.overlap(t)["global"] < 0.5  # unrelated to the magnitude mask
    again = random_ticket(t, matched=True, seed=1)
    assert all(torch.equal(again.masks[n], rm.masks[n]) for n in rm.masks)


def test_shuffle_keeps_each_tensor_multiset():
    model, t = _ticket()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    shuffle_weights(model, t, seed=0)
    after = dict(model.named_parameters())
    for n in t.masks:
        assert not torch.equal(after[n], before[n])
        assert torch.equal(after[n].detach().reshape(-1).sort().values, before[n].reshape(-1).sort().values)
    assert torch.equal(after["head.weight"], before["head.weight"])  # outside the ticket: untouched


def test_reinit_changes_weights_reproducibly():
    model, t = _ticket()
    a = ToyClassifier()
    a.load_state_dict(model.state_dict())
    reinit_weights(model, t, seed=3)
    reinit_weights(a, t, seed=3)
    n = next(iter(t.masks))
    assert torch.equal(dict(model.named_parameters())[n], dict(a.named_parameters())[n])
    with pytest.raises(TicketError, match="no reset_parameters"):
        reinit_weights(_NoReset(), ["lin.weight"])


class _NoReset(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = _Plain()


class _Plain(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(2))


def test_load_weights_with_remap_reports(tmp_path):
    src = ToyClassifier()
    dst = ToyClassifier()
    sd = {f"model.{k}": v for k, v in src.state_dict().items()}
    sd["model.extra"] = torch.zeros(1)
    report = load_weights(dst, sd, remap={"model.": ""})
    assert "model.extra" not in report["matched"] and report["unexpected"] == ["extra"]
    assert not report["missing"]
    assert torch.equal(dst.head.weight, src.head.weight)
    with pytest.raises(TicketError, match="missing"):
        load_weights(ToyClassifier(), {"head.weight": src.head.weight}, strict=True)
    torch.save({"state_dict": src.state_dict()}, tmp_path / "x.ckpt")
    assert len(load_weights(ToyClassifier(), tmp_path / "x.ckpt")["matched"]) == len(list(dst.parameters()))


@pytest.mark.parametrize(
    ("mask", "weights"), [("random_matched", "init"), ("ticket", "shuffled"), ("ticket", "reinit"), ("random", "init")]
)
def test_fixed_ticket_baselines_train_in_the_callback(tmp_path, mask, weights):
    import lightning as L

    model, t = _ticket()
    t.save(tmp_path / "t.safetensors")
    cb = LotteryTicketCallback(
        ticket=str(tmp_path / "t.safetensors"),
        ticket_mask=mask,
        ticket_weights=weights,
        ticket_dir=str(tmp_path / "out"),
        plot=False,
        seed=1,
    )
    L.Trainer(
        max_epochs=1,
        callbacks=[cb],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    ).fit(model, ToyDataModule(num_samples=128))
    params = dict(model.named_parameters())
    for n, m in cb.masks.items():
        assert bool((params[n][~m] == 0).all())
    same = all(torch.equal(cb.masks[n], t.masks[n]) for n in t.masks)
    assert same == (mask == "ticket")
    assert sum(int((~m).sum()) for m in cb.masks.values()) == t.num_pruned


def test_theta_prime_weights_from_checkpoint(tmp_path):
    import lightning as L

    other = ToyClassifier()
    torch.save(other.state_dict(), tmp_path / "other.pt")
    model, t = _ticket()
    t.save(tmp_path / "t.safetensors")

    class Grab(L.Callback):
        def on_train_start(self, trainer, pl_module):
            self.w = pl_module.head.weight.detach().clone()

    g = Grab()
    cb = LotteryTicketCallback(
        ticket=str(tmp_path / "t.safetensors"),
        ticket_weights=str(tmp_path / "other.pt"),
        ticket_dir=str(tmp_path / "out"),
        plot=False,
    )
    L.Trainer(
        max_epochs=1,
        callbacks=[cb, g],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    ).fit(model, ToyDataModule(num_samples=128))
    assert torch.equal(g.w, other.head.weight)
    with pytest.raises(ValueError, match="only apply with ticket=PATH"):
        LotteryTicketCallback(0.5, epochs_per_round=1, ticket_weights="shuffled")
