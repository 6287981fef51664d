"""VILLA-style adversarial training: PGD perturbations of the word and image embeddings + a symmetric-KL term.

Gan et al. (VILLA, NeurIPS 2020; the lottery-ticket paper's fourth finding) train on adversarial examples made in
the *embedding space* of each modality: a perturbation ``delta`` is added to the word embeddings (text) or to the
image embeddings (region features after their projection, or ViLT's patch embeddings), found by a few steps of
projected gradient ascent (PGD) on the task loss, one modality at a time. The training loss of a batch is::

    L = L_task(clean) + mean_m L_task(adv_m) + kl_weight * mean_m SKL(clean, adv_m)

with ``m`` over :attr:`AdversarialConfig.modalities` and ``SKL(p, q) = KL(p || q) + KL(q || p)`` between the
predictions on the clean and on the perturbed input (:func:`symmetric_kl`).

This module holds the configuration (:class:`AdversarialConfig`), the maths as small pure functions
(:func:`project`, :func:`ascent_direction`, :func:`pgd_step`, :func:`symmetric_kl`, :func:`random_start`) and the
inner loop (:func:`adversarial_terms`). Task modules switch it on with ``adversarial=AdversarialConfig(...)``
(:class:`~lightning_tickets.tasks.TaskModule`); backbones expose their embeddings through
:meth:`VLBackbone.perturb <lightning_tickets.backbones.VLBackbone.perturb>`. See ``docs/adversarial.md``.

Example:
    >>> import torch
    >>> delta = torch.tensor([[[3.0, 4.0]], [[0.3, 0.4]]])  # per-example L2 norms 5 and 0.5
    >>> project(delta, epsilon=1.0, norm="l2").flatten(1).norm(dim=1).tolist()
    [1.0, 0.5]
    >>> [round(x, 4) for x in project(delta, epsilon=1.0, norm="linf").flatten().tolist()]
    [1.0, 1.0, 0.3, 0.4]
    >>> float(symmetric_kl(Logits(torch.zeros(2, 3)), Logits(torch.zeros(2, 3))))
    0.0
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from lightning_tickets.backbones.base import VLBackbone

__all__ = [
    "MODALITIES",
    "AdversarialConfig",
    "AdversarialTerms",
    "Logits",
    "Site",
    "SiteRecorder",
    "adversarial_terms",
    "ascent_direction",
    "example_norms",
    "pgd_step",
    "project",
    "random_start",
    "symmetric_kl",
]

#: Modalities a backbone can perturb (:meth:`VLBackbone.perturb` sites).
MODALITIES = ("text", "image")
_NORMS = ("l2", "linf")


def _per_modality(value: Any, name: str) -> dict[str, float]:
    """``float`` -> the same value for every modality; a ``{modality: float}`` mapping is checked and completed."""
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(MODALITIES))
        if unknown:
            raise ValueError(
                f"AdversarialConfig({name}={dict(value)}): unknown modality {unknown}; use the keys {list(MODALITIES)}"
            )
        return {m: float(value[m]) for m in value}
    return {m: float(value) for m in MODALITIES}


@dataclass(frozen=True)
class AdversarialConfig:
    """Settings of VILLA-style adversarial training (``adversarial=`` of every task module).

    Args:
        steps: PGD ascent steps per modality and batch. ``0`` switches adversarial training off (the loss is then
            exactly the standard one). Cost per training step: about ``1 + len(modalities) * (steps + 1)`` forward
            passes and ``len(modalities) * steps`` input-gradient backward passes on top of the standard step.
        epsilon: radius of the ball the perturbation is projected onto after every step (``>= 0``): per-example
            Frobenius norm of the perturbation of all positions (``norm="l2"``) or largest absolute entry
            (``"linf"``). A ``{"text": ..., "image": ...}`` mapping sets one radius per modality (word embeddings
            and image embeddings have different scales).
        step_size: PGD step length (``> 0``): an L2 step of this norm along the normalised gradient, or
            ``step_size * sign(gradient)`` for ``"linf"``. ``None``: ``2.5 * epsilon / steps`` (Madry et al.). A
            mapping sets one value per modality.
        norm: ``"l2"`` or ``"linf"``.
        kl_weight: weight of the symmetric KL between clean and adversarial predictions (``>= 0``; 0 drops it).
        modalities: which embeddings to attack, ``("text", "image")`` (one adversarial example per modality, as
            VILLA), ``("text",)`` or ``("image",)``.
        init_std: standard deviation of a Gaussian random start (projected onto the ball); ``0`` starts at zero.

    Example:
        >>> cfg = AdversarialConfig(steps=2, epsilon={"text": 0.5, "image": 2.0})
        >>> cfg.radius("image"), cfg.step("image"), cfg.enabled
        (2.0, 2.5, True)
        >>> AdversarialConfig(norm="l1")
        Traceback (most recent call last):
        ...
        ValueError: AdversarialConfig(norm='l1'): norm must be 'l2' or 'linf'
    """

    steps: int = 3
    epsilon: float | dict[str, float] = 1.0
    step_size: float | dict[str, float] | None = None
    norm: Literal["l2", "linf"] = "l2"
    kl_weight: float = 1.0
    modalities: tuple[str, ...] = ("text", "image")
    init_std: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            raise ValueError(
                f"AdversarialConfig(steps={self.steps!r}): steps must be an int >= 0 (0 turns adversarial training off)"
            )
        if self.norm not in _NORMS:
            raise ValueError(f"AdversarialConfig(norm={self.norm!r}): norm must be 'l2' or 'linf'")
        modalities = (self.modalities,) if isinstance(self.modalities, str) else tuple(self.modalities)
        bad = [m for m in modalities if m not in MODALITIES]
        if bad or not modalities or len(set(modalities)) != len(modalities):
            raise ValueError(
                f"AdversarialConfig(modalities={self.modalities!r}): give distinct modalities among "
                f"{list(MODALITIES)}, e.g. ['text', 'image']"
            )
        object.__setattr__(self, "modalities", modalities)
        radius = _per_modality(self.epsilon, "epsilon")
        for eps in radius.values():
            if not math.isfinite(eps) or eps < 0:
                raise ValueError(f"AdversarialConfig(epsilon={self.epsilon!r}): epsilon must be a finite float >= 0")
        missing = [m for m in modalities if m not in radius]
        if missing:
            raise ValueError(
                f"AdversarialConfig(epsilon={self.epsilon!r}): no radius for modality {missing}; add it to the mapping"
            )
        if self.step_size is not None:
            step = _per_modality(self.step_size, "step_size")
            for s in step.values():
                if not math.isfinite(s) or s <= 0:
                    raise ValueError(
                        f"AdversarialConfig(step_size={self.step_size!r}): step_size must be a float > 0 (or None for "
                        "2.5 * epsilon / steps)"
                    )
            missing = [m for m in modalities if m not in step]
            if missing:
                raise ValueError(
                    f"AdversarialConfig(step_size={self.step_size!r}): no step size for modality {missing}; add it"
                )
        if not math.isfinite(float(self.kl_weight)) or self.kl_weight < 0:
            raise ValueError(f"AdversarialConfig(kl_weight={self.kl_weight!r}): kl_weight must be a float >= 0")
        if not math.isfinite(float(self.init_std)) or self.init_std < 0:
            raise ValueError(f"AdversarialConfig(init_std={self.init_std!r}): init_std must be a float >= 0")

    @property
    def enabled(self) -> bool:
        """Whether training steps do anything adversarial (``steps > 0``)."""
        return self.steps > 0

    def radius(self, modality: str) -> float:
        """The ball radius ``epsilon`` of ``modality``."""
        return _per_modality(self.epsilon, "epsilon")[modality]

    def step(self, modality: str) -> float:
        """The PGD step size of ``modality`` (default: ``2.5 * epsilon / steps``)."""
        if self.step_size is None:
            return 2.5 * self.radius(modality) / max(1, self.steps)
        return _per_modality(self.step_size, "step_size")[modality]

    @classmethod
    def coerce(cls, value: AdversarialConfig | Mapping[str, Any] | None) -> AdversarialConfig | None:
        """``None``, a config, or a plain mapping of its fields (e.g. from a yaml file) -> config or ``None``."""
        if value is None or isinstance(value, AdversarialConfig):
            return value
        if isinstance(value, Mapping):
            return cls(**dict(value))
        raise TypeError(f"adversarial must be an AdversarialConfig, a mapping of its fields or None, not {value!r}")


# Lightning saves init arguments (hparams) in checkpoints, read back with torch.load(weights_only=True).
# Checkpoints written before this module moved into ``tasks/`` name the class by its old path.
torch.serialization.add_safe_globals(
    [AdversarialConfig, (AdversarialConfig, "lightning_tickets.adversarial.AdversarialConfig")]
)


# ---------------------------------------------------------------------------------------------------- maths
def example_norms(x: torch.Tensor, norm: str = "l2") -> torch.Tensor:
    """Per-example norm of ``x`` (first dimension = examples): Frobenius (``"l2"``) or max-abs (``"linf"``).

    Example:
        >>> example_norms(torch.tensor([[3.0, -4.0], [1.0, 0.0]])).tolist()
        [5.0, 1.0]
        >>> example_norms(torch.tensor([[3.0, -4.0], [1.0, 0.0]]), "linf").tolist()
        [4.0, 1.0]
    """
    flat = x.reshape(x.shape[0], -1).float()
    if norm == "linf":
        return flat.abs().amax(dim=1) if flat.shape[1] else flat.new_zeros(x.shape[0])
    return flat.norm(dim=1)


def _per_example(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.reshape(-1, *([1] * (like.dim() - 1))).to(like.dtype)


def project(delta: torch.Tensor, epsilon: float, norm: str = "l2") -> torch.Tensor:
    """Projection onto the ``epsilon``-ball: rescale examples whose Frobenius norm exceeds ``epsilon`` (``"l2"``)
    or clamp every entry to ``[-epsilon, epsilon]`` (``"linf"``).

    Example:
        >>> project(torch.tensor([[6.0, 8.0]]), 5.0).tolist()
        [[3.0, 4.0]]
    """
    if norm == "linf":
        return delta.clamp(-epsilon, epsilon)
    norms = example_norms(delta)
    scale = (epsilon / norms.clamp_min(1e-12)).clamp(max=1.0)
    return delta * _per_example(scale, delta)


def ascent_direction(grad: torch.Tensor, norm: str = "l2") -> torch.Tensor:
    """Steepest-ascent direction of unit size: ``grad / ||grad||_F`` per example (``"l2"``; zero where the gradient
    is zero) or ``sign(grad)`` (``"linf"``). Non-finite gradient entries count as zero.

    Example:
        >>> [round(x, 4) for x in ascent_direction(torch.tensor([[3.0, 4.0], [0.0, 0.0]])).flatten().tolist()]
        [0.6, 0.8, 0.0, 0.0]
    """
    grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
    if norm == "linf":
        return grad.sign()
    return grad / _per_example(example_norms(grad).clamp_min(1e-12), grad)


def pgd_step(
    delta: torch.Tensor,
    grad: torch.Tensor,
    step_size: float,
    epsilon: float,
    norm: str = "l2",
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """One projected gradient-ascent step: ``project(delta + step_size * ascent_direction(grad))``, zero outside
    ``mask`` (``[B, L]`` real positions of a ``[B, L, H]`` perturbation). Returns a new tensor without history.

    Example:
        >>> d = pgd_step(torch.zeros(1, 2, 2), torch.ones(1, 2, 2), step_size=4.0, epsilon=1.0,
        ...              mask=torch.tensor([[True, False]]))
        >>> [round(x, 4) for x in d.flatten().tolist()], round(float(example_norms(d)[0]), 4)
        ([0.7071, 0.7071, 0.0, 0.0], 1.0)
    """
    with torch.no_grad():
        if mask is not None:
            grad = grad * mask.unsqueeze(-1).to(grad.dtype)
        new = project(delta + step_size * ascent_direction(grad, norm), epsilon, norm)
        if mask is not None:
            new = new * mask.unsqueeze(-1).to(new.dtype)
    return new.detach()


def random_start(
    shape: Sequence[int],
    mask: torch.Tensor | None,
    std: float,
    epsilon: float,
    norm: str = "l2",
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Starting perturbation: zeros (``std == 0``) or ``N(0, std^2)`` at the real positions, projected onto the ball.

    Example:
        >>> d = random_start((2, 3, 4), None, std=10.0, epsilon=1.0)
        >>> bool((example_norms(d) <= 1.0 + 1e-6).all())
        True
    """
    delta = torch.zeros(tuple(shape), dtype=dtype, device=device)
    if std > 0:
        delta.normal_(0.0, std)
        if mask is not None:
            delta = delta * mask.unsqueeze(-1).to(dtype)
        delta = project(delta, epsilon, norm)
    return delta


@dataclass
class Logits:
    """Predictions compared by the consistency term.

    Attributes:
        values: logits; rows along the first dimension.
        kind: ``"categorical"`` (a softmax over the last dimension: classification, VQA with ``loss="ce"``,
            multiple choice, region selection, MLM) or ``"bernoulli"`` (an independent sigmoid per entry: VQA's
            multi-label BCE over answers, image-text matching scores).
    """

    values: torch.Tensor
    kind: Literal["categorical", "bernoulli"] = "categorical"


def symmetric_kl(clean: Logits, adv: Logits) -> torch.Tensor:
    """``KL(p || q) + KL(q || p)`` between the distributions of two logit tensors, averaged over rows (float32).

    * ``"categorical"``: ``p = softmax(a)``, ``q = softmax(b)`` over the last dimension; the symmetric KL is
      ``sum((p - q) * (log p - log q))`` per row, averaged over all leading dimensions.
    * ``"bernoulli"``: one Bernoulli ``sigmoid(z)`` per entry; the symmetric KL of two Bernoullis is
      ``(sigmoid(a) - sigmoid(b)) * (a - b)``, summed over the entries of a row (all dimensions but the first,
      e.g. the answers of a question) and averaged over rows.

    Zero (exactly) for identical logits, positive otherwise; gradients flow into both arguments.

    Example:
        >>> a, b = torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, 1.0]])
        >>> round(float(symmetric_kl(Logits(a), Logits(b))), 4)
        0.7616
        >>> round(float(symmetric_kl(Logits(a, "bernoulli"), Logits(b, "bernoulli"))), 4)
        0.3808
    """
    if clean.kind != adv.kind or clean.values.shape != adv.values.shape:
        raise ValueError(
            f"clean and adversarial predictions differ: {clean.kind} {tuple(clean.values.shape)} vs {adv.kind} "
            f"{tuple(adv.values.shape)} (the task must produce the same outputs on every pass)"
        )
    a, b = clean.values.float(), adv.values.float()
    if a.numel() == 0:
        return a.sum() + b.sum()
    if clean.kind == "bernoulli":
        per = (torch.sigmoid(a) - torch.sigmoid(b)) * (a - b)
        return per.reshape(per.shape[0], -1).sum(dim=1).mean() if per.dim() > 1 else per.mean()
    if clean.kind != "categorical":
        raise ValueError(f"Logits.kind must be 'categorical' or 'bernoulli', got {clean.kind!r}")
    log_p, log_q = F.log_softmax(a, dim=-1), F.log_softmax(b, dim=-1)
    per = ((log_p.exp() - log_q.exp()) * (log_p - log_q)).sum(dim=-1)
    return per.mean()


def total_symmetric_kl(clean: Sequence[Logits], adv: Sequence[Logits]) -> torch.Tensor | None:
    """Sum of :func:`symmetric_kl` over matching predictions (e.g. VCR's Q->A and QA->R); ``None`` if there are
    none."""
    if len(clean) != len(adv):
        raise ValueError(f"{len(clean)} clean predictions but {len(adv)} adversarial ones")
    terms = [symmetric_kl(c, a) for c, a in zip(clean, adv)]
    return torch.stack(terms).sum() if terms else None


# ---------------------------------------------------------------------------------------------------- sites
@dataclass
class Site:
    """One embedding a backbone exposed in a forward pass: its modality, shape ``[B, L, H]``, ``mask`` ``[B, L]``
    of real positions, dtype and device (the deltas are created from these)."""

    modality: str
    shape: tuple[int, ...]
    mask: torch.Tensor
    dtype: torch.dtype
    device: torch.device


class SiteRecorder:
    """Perturbation hook that changes nothing and records every :class:`Site` (use on the clean pass).

    Example:
        >>> from lightning_tickets.backbones import Uniter
        >>> model, rec = Uniter("tiny", img_dim=6), SiteRecorder()
        >>> batch = {"input_ids": torch.tensor([[101, 5, 102]]), "img_feat": torch.randn(1, 2, 6),
        ...          "img_pos_feat": torch.rand(1, 2, 7)}
        >>> with model.perturbation(rec):
        ...     _ = model(batch)
        >>> [(s.modality, s.shape) for s in rec.sites]
        [('text', (1, 3, 32)), ('image', (1, 2, 32))]
    """

    def __init__(self) -> None:
        self.sites: list[Site] = []

    def __call__(self, modality: str, embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        dtype = torch.promote_types(embeddings.dtype, torch.float32)
        self.sites.append(Site(modality, tuple(embeddings.shape), mask.detach().bool(), dtype, embeddings.device))
        return embeddings


class _AddDeltas:
    """Perturbation hook adding ``deltas[i]`` to the ``i``-th site of a pass (sites without a delta unchanged)."""

    def __init__(self, sites: Sequence[Site], deltas: Mapping[int, torch.Tensor]) -> None:
        self.sites, self.deltas, self.calls = sites, deltas, 0

    def __call__(self, modality: str, embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        i, self.calls = self.calls, self.calls + 1
        if i >= len(self.sites) or self.sites[i].modality != modality or self.sites[i].shape != tuple(embeddings.shape):
            raise RuntimeError(
                f"embedding site {i} ({modality}, {tuple(embeddings.shape)}) differs from the clean pass "
                f"({[(s.modality, s.shape) for s in self.sites]}): adversarial training needs a task whose training "
                "forward calls the backbone the same way on every pass"
            )
        delta = self.deltas.get(i)
        return embeddings if delta is None else embeddings + delta.to(embeddings.dtype)


# ---------------------------------------------------------------------------------------------------- inner loop
@dataclass
class AdversarialTerms:
    """What :func:`adversarial_terms` returns.

    Attributes:
        loss: task loss on the adversarial inputs, averaged over the attacked modalities.
        kl: symmetric KL between clean and adversarial predictions, averaged over the attacked modalities.
        delta_norms: ``{modality: largest per-example norm of the final perturbation}`` (in the config's norm; a
            0-d tensor, so reading it on an accelerator is the caller's choice of a host sync).
        modalities: the modalities attacked in this batch (those with an embedding site).
    """

    loss: torch.Tensor
    kl: torch.Tensor
    delta_norms: dict[str, torch.Tensor] = field(default_factory=dict)
    modalities: list[str] = field(default_factory=list)


RunFn = Callable[[], tuple[torch.Tensor, Sequence[Logits]]]


def _largest_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    return example_norms(delta, norm).amax() if delta.shape[0] else delta.new_zeros((), dtype=torch.float32)


def adversarial_terms(
    run: RunFn,
    backbone: VLBackbone,
    sites: Sequence[Site],
    clean_logits: Sequence[Logits],
    config: AdversarialConfig,
    clean_loss: torch.Tensor | None = None,
) -> AdversarialTerms:
    """PGD on each modality's embeddings, then the adversarial loss and KL terms (with graphs for the backward).

    ``run()`` runs the task's training forward on the batch and returns ``(loss, predictions)``; it is called
    ``steps + 1`` times per modality inside :meth:`VLBackbone.perturbation`. ``sites`` come from a
    :class:`SiteRecorder` on the clean pass. The ascent maximises ``loss + kl_weight * SKL(clean, adv)`` with the
    clean predictions detached; each ascent step takes ``torch.autograd.grad`` with respect to the perturbations
    only (no parameter gradients, nothing accumulated), and the perturbations are detached after every step, so no
    graph outlives its step. Only the final adversarial pass of each modality keeps its graph, for the caller's
    backward. Modalities without a site in ``sites`` (e.g. a text-only batch) are skipped; if none is left, both
    terms are a graph-connected zero (``clean_loss * 0`` when given).
    """
    detached = [Logits(c.values.detach(), c.kind) for c in clean_logits]
    losses, kls, norms, attacked = [], [], {}, []
    for modality in config.modalities:
        idx = [i for i, s in enumerate(sites) if s.modality == modality]
        if not idx:
            continue
        eps, alpha = config.radius(modality), config.step(modality)
        deltas = {
            i: random_start(
                sites[i].shape, sites[i].mask, config.init_std, eps, config.norm, sites[i].dtype, sites[i].device
            )
            for i in idx
        }
        for _ in range(config.steps):
            leaves = {i: d.requires_grad_(True) for i, d in deltas.items()}
            with backbone.perturbation(_AddDeltas(sites, leaves)):
                loss, logits = run()
            objective = loss
            if config.kl_weight > 0:
                kl = total_symmetric_kl(detached, logits)
                if kl is not None:
                    objective = objective + config.kl_weight * kl
            grads = torch.autograd.grad(objective, list(leaves.values()), allow_unused=True)
            deltas = {
                i: pgd_step(d.detach(), torch.zeros_like(d) if g is None else g, alpha, eps, config.norm, sites[i].mask)
                for (i, d), g in zip(leaves.items(), grads)
            }
            del loss, logits, objective, grads, leaves
        with backbone.perturbation(_AddDeltas(sites, deltas)):
            loss, logits = run()
        kl = total_symmetric_kl(clean_logits, logits)
        losses.append(loss)
        kls.append(loss * 0.0 if kl is None else kl)
        norms[modality] = torch.stack([_largest_norm(d, config.norm) for d in deltas.values()]).amax()
        attacked.append(modality)
    if not losses:
        zero = (clean_loss * 0.0) if clean_loss is not None else torch.zeros(())
        return AdversarialTerms(zero, zero, {}, [])
    return AdversarialTerms(torch.stack(losses).mean(), torch.stack(kls).mean(), norms, attacked)
