"""Shared plumbing of task modules: backbone + head, AdamW with a "new layers" learning rate, warm-up + decay.

A task module owns a :class:`~lightning_tickets.backbones.VLBackbone` (``self.backbone``) and a task head
(``self.head``); the lottery-ticket callback prunes/rewinds the backbone and resets the head. Learning-rate
schedule length: **one pruning round** when a :class:`LotteryTicketCallback` is attached (each round is a full
fine-tune and the callback re-creates optimizers and schedulers after every prune), else the whole fit.

Parameter groups (AdamW):

* pre-trained backbone parameters: ``lr``;
* new layers: the head, plus the backbone parameters that were not initialised from a checkpoint (UNITER built
  from a BERT checkpoint: ``img_embeddings.*``), see ``new_backbone_params``: ``lr * head_lr_multiplier``;
* biases and LayerNorm weights get no weight decay (BERT convention).

Training step: subclasses implement :meth:`TaskModule.training_outputs` (loss + predictions of one batch, a
:class:`StepOutput`); :meth:`TaskModule.training_step` logs and returns the loss, and with ``adversarial=``
(:class:`~lightning_tickets.tasks.adversarial.AdversarialConfig`) adds VILLA-style adversarial training: the loss
becomes ``clean + mean adversarial loss + kl_weight * mean symmetric KL`` (see ``docs/adversarial.md``).

Example:
    >>> import torch
    >>> from lightning_tickets.backbones import Uniter
    >>> class Cls(TaskModule):
    ...     def __init__(self, backbone, lr: float = 1e-4):
    ...         super().__init__(backbone, lr=lr)
    ...         self.head = torch.nn.Linear(backbone.hidden_size, 2)
    >>> opt = Cls(Uniter("tiny", img_dim=4)).configure_optimizers()["optimizer"]
    >>> sorted({g["lr"] for g in opt.param_groups})  # everything is new in a randomly initialised backbone
    [0.001]
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from lightning_tickets.backbones.base import VLBackbone
from lightning_tickets.tasks.adversarial import AdversarialConfig, Logits, SiteRecorder, adversarial_terms

log = logging.getLogger(__name__)

try:  # Lightning >= 2.3: hyper-parameters given by LightningCLI (nested class_path dicts) instead of init locals
    from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
except ImportError:  # pragma: no cover
    _given_hyperparameters = None


def _no_decay(name: str, param: nn.Parameter) -> bool:
    return param.dim() < 2 or "LayerNorm" in name or "layer_norm" in name or name.endswith(".bias")


def schedule_length(trainer: Any) -> int | None:
    """Optimizer steps the LR schedule spans: one IMP round if a ticket callback says so, else the whole fit.

    Returns ``None`` when unknown or unbounded (then the schedule stays constant after warm-up).
    """
    if trainer is None:
        return None
    from lightning_tickets.schedule import round_length

    n = round_length(trainer)
    if n is not None:
        return int(n)
    try:
        n = trainer.estimated_stepping_batches
    except Exception:  # noqa: BLE001 - e.g. no dataloader attached yet
        return None
    if n is None or (isinstance(n, float) and not math.isfinite(n)):
        return None
    return int(n)


def _fused_supported(params: Iterable[torch.Tensor]) -> bool:
    """Whether torch's fused AdamW kernel can take these parameters (all floating point, all on CPU or all on CUDA).

    The fused kernel does the same update as the default one (to rounding) in one pass over the memory; on CPU it
    is ~4x faster for a 22M-parameter model (0.023 s vs 0.099 s per step).
    """
    devices = set()
    for p in params:
        if not p.is_floating_point():
            return False
        devices.add(p.device.type)
    return len(devices) == 1 and devices <= {"cpu", "cuda"}


# ------------------------------------------------------------------------------------ helpers shared by the tasks
def init_head_(module: nn.Module, std: float = 0.02) -> None:
    """BERT-style initialisation of a task head in place: ``N(0, std)`` Linear weights, zero biases.

    Example:
        >>> head = nn.Linear(4, 2); init_head_(head); head.bias.tolist()
        [0.0, 0.0]
    """
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def cross_entropy_ignore(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -1) -> torch.Tensor:
    """Mean cross-entropy over the labels ``!= ignore_index``; a graph-connected 0 when there are none.

    Example:
        >>> float(cross_entropy_ignore(torch.zeros(2, 3), torch.tensor([-1, -1])))
        0.0
    """
    labels = labels.long()
    if not bool((labels != ignore_index).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels, ignore_index=ignore_index)


class VQAHead(nn.Sequential):
    """UNITER's VQA head: ``Linear(H, 2H) -> GELU -> LayerNorm -> Dropout -> Linear(2H, num_answers)`` (also the
    GQA, SNLI-VE and VCR head).

    Example:
        >>> VQAHead(8, 3)(torch.zeros(2, 8)).shape
        torch.Size([2, 3])
    """

    def __init__(self, hidden_size: int, num_answers: int, dropout: float = 0.0) -> None:
        super().__init__(
            nn.Linear(hidden_size, 2 * hidden_size),
            nn.GELU(),
            nn.LayerNorm(2 * hidden_size, eps=1e-12),
            nn.Dropout(dropout),
            nn.Linear(2 * hidden_size, num_answers),
        )


@dataclass
class StepOutput:
    """What :meth:`TaskModule.training_outputs` returns for one training batch.

    Attributes:
        loss: the task loss (scalar).
        batch_size: examples in the batch (for logging).
        logits: the predictions the adversarial consistency term compares, with their distribution kind
            (:class:`~lightning_tickets.tasks.adversarial.Logits`); empty when the task has none.
        logs: extra training metrics, logged for the clean pass only (e.g. ``{"train/mlm_loss": ...}``).

    Example:
        >>> out = StepOutput(torch.tensor(0.5), 2, [Logits(torch.zeros(2, 3))])
        >>> out.batch_size, out.logits[0].kind
        (2, 'categorical')
    """

    loss: torch.Tensor
    batch_size: int
    logits: Sequence[Logits] = ()
    logs: Mapping[str, torch.Tensor] = field(default_factory=dict)


#: The training settings every task takes through ``**kwargs`` (the keyword arguments of :class:`TaskModule`).
TRAINING_ARGS = (
    "lr",
    "head_lr_multiplier",
    "weight_decay",
    "warmup_steps",
    "lr_schedule",
    "new_backbone_params",
    "betas",
    "eps",
    "adversarial",
)


class TaskModule(L.LightningModule):
    """Base LightningModule of every task: ``backbone`` + ``head``, optimizer and LR schedule.

    Subclasses build ``self.head`` after calling ``super().__init__`` and implement the steps. The training
    settings below are declared here once: a subclass takes its own arguments and passes ``**kwargs`` on
    (``super().__init__(backbone, **kwargs)``); LightningCLI follows the ``**kwargs`` to this signature, so every
    task's yaml still has ``model.init_args.lr``, ``model.init_args.warmup_steps``, ... (see :data:`TRAINING_ARGS`).

    Args:
        backbone: the vision-and-language backbone (a nested ``class_path``/``init_args`` in yaml).
        lr: AdamW learning rate of pre-trained parameters.
        head_lr_multiplier: learning-rate multiplier of new layers (the head and ``new_backbone_params``).
        weight_decay: AdamW weight decay (not applied to biases and LayerNorm weights).
        warmup_steps: linear warm-up length: an ``int`` number of optimizer steps, or a ``float`` in ``[0, 1)``
            as a fraction of the schedule length (one IMP round, or the whole fit).
        lr_schedule: ``"linear"`` (decay to 0 at the end of the round/fit) or ``"constant"`` after warm-up.
        new_backbone_params: which backbone parameters count as new layers: ``"auto"`` (those the backbone reports
            as not loaded from a checkpoint, :meth:`VLBackbone.new_parameter_names`), ``"none"``, or a list of
            parameter-name prefixes (e.g. ``["img_embeddings."]``).
        betas: AdamW betas.
        eps: AdamW epsilon.
        adversarial: VILLA-style adversarial training (:class:`~lightning_tickets.tasks.adversarial.AdversarialConfig`,
            or a mapping of its fields); ``None`` (default) or ``steps=0``: standard training.
    """

    backbone: VLBackbone
    head: nn.Module

    def __init__(
        self,
        backbone: VLBackbone,
        lr: float = 5e-5,
        head_lr_multiplier: float = 10.0,
        weight_decay: float = 0.01,
        warmup_steps: int | float = 0,
        lr_schedule: Literal["linear", "constant"] = "linear",
        new_backbone_params: str | Sequence[str] = "auto",
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        adversarial: AdversarialConfig | None = None,
    ) -> None:
        super().__init__()
        from_cli = _given_hyperparameters is not None and _given_hyperparameters.get() is not None
        # Outside LightningCLI the backbone is a module (its weights are in the checkpoint anyway): don't pickle it.
        self.save_hyperparameters(ignore=[] if from_cli else ["backbone"])
        if lr_schedule not in ("linear", "constant"):
            raise ValueError(f"lr_schedule must be 'linear' or 'constant', got {lr_schedule!r}")
        if isinstance(warmup_steps, float) and not 0.0 <= warmup_steps < 1.0:
            raise ValueError(f"a float warmup_steps is a fraction in [0, 1); got {warmup_steps}")
        self.backbone = backbone
        self.lr = lr
        self.head_lr_multiplier = head_lr_multiplier
        self.weight_decay = weight_decay
        self.warmup_steps = warmup_steps
        self.lr_schedule = lr_schedule
        self.new_backbone_params = new_backbone_params
        self.betas = tuple(betas)
        self.eps = eps
        self.adversarial = AdversarialConfig.coerce(adversarial)
        if self.adversarial is not None and self.adversarial.enabled:
            self._check_adversarial(self.adversarial)

    # ------------------------------------------------------------------ training step
    def _check_adversarial(self, config: AdversarialConfig) -> None:
        supported = tuple(getattr(self.backbone, "perturbable_modalities", ()))
        missing = [m for m in config.modalities if m not in supported]
        if missing:
            hint = f"use modalities={list(supported)}" if supported else "it has no perturbable embeddings"
            raise ValueError(
                f"adversarial training of {missing} embeddings: {type(self.backbone).__name__} does not pass them "
                f"through VLBackbone.perturb ({hint})"
            )
        if type(self).training_outputs is TaskModule.training_outputs:
            raise ValueError(
                f"adversarial training needs {type(self).__name__}.training_outputs (loss and predictions of a batch); "
                "implement it instead of training_step"
            )

    def training_outputs(self, batch: Any, batch_idx: int) -> StepOutput:
        """Loss and predictions of one training batch (no logging). Subclasses implement it.

        It must call the backbone the same way on every call for a given batch (adversarial training runs it
        ``1 + len(modalities) * (steps + 1)`` times per batch).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement training_outputs or override training_step")

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Task loss of :meth:`training_outputs`, plus the adversarial terms when ``adversarial`` is on.

        Logs ``train/loss`` (the loss returned for the backward) and, with adversarial training,
        ``train/clean_loss``, ``train/adv_loss`` and ``train/adv_kl``.
        """
        config = self.adversarial
        if config is None or not config.enabled:
            out = self.training_outputs(batch, batch_idx)
            loss = out.loss
        else:
            recorder = SiteRecorder()
            with self.backbone.perturbation(recorder):
                out = self.training_outputs(batch, batch_idx)

            def run() -> tuple[torch.Tensor, Sequence[Logits]]:
                adv = self.training_outputs(batch, batch_idx)
                return adv.loss, adv.logits

            terms = adversarial_terms(run, self.backbone, recorder.sites, out.logits, config, clean_loss=out.loss)
            loss = out.loss + terms.loss + config.kl_weight * terms.kl
            n = out.batch_size
            self.log("train/clean_loss", out.loss.detach(), batch_size=n)
            self.log("train/adv_loss", terms.loss.detach(), batch_size=n)
            self.log("train/adv_kl", terms.kl.detach(), batch_size=n)
        for name, value in out.logs.items():
            self.log(name, value, batch_size=out.batch_size)
        self.log("train/loss", loss, prog_bar=True, batch_size=out.batch_size)
        return loss

    # ------------------------------------------------------------------ parameter groups
    def new_parameter_names(self) -> set[str]:
        """Qualified names (``backbone.*`` / ``head.*``) of the parameters trained with the new-layer rate."""
        names = {f"head.{n}" for n, _ in self.head.named_parameters()} if hasattr(self, "head") else set()
        spec = self.new_backbone_params
        if spec == "auto":
            names |= {f"backbone.{n}" for n in self.backbone.new_parameter_names()}
        elif spec == "none":
            pass
        else:
            prefixes = (spec,) if isinstance(spec, str) else tuple(spec)
            names |= {f"backbone.{n}" for n, _ in self.backbone.named_parameters() if n.startswith(prefixes)}
        return names

    def parameter_groups(self) -> list[dict[str, Any]]:
        """AdamW parameter groups (pre-trained / new x decay / no decay); empty groups are dropped."""
        new = self.new_parameter_names()
        groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            groups.setdefault((name in new, _no_decay(name, p)), []).append(p)
        out = []
        for (is_new, no_decay), params in sorted(groups.items()):
            out.append(
                {
                    "params": params,
                    "lr": self.lr * (self.head_lr_multiplier if is_new else 1.0),
                    "weight_decay": 0.0 if no_decay else self.weight_decay,
                    "name": f"{'new' if is_new else 'pretrained'}{'_no_decay' if no_decay else ''}",
                }
            )
        return out

    # ------------------------------------------------------------------ schedule
    def lr_lambda(self, total_steps: int | None) -> Any:
        """Multiplier of the base LR at optimizer step ``s`` (warm-up, then linear decay or constant)."""
        warm = self.warmup_steps
        if isinstance(warm, float):
            warm = int(round(warm * total_steps)) if total_steps else 0
        warm = max(0, int(warm))
        linear = self.lr_schedule == "linear" and total_steps is not None and total_steps > 0

        def fn(step: int) -> float:
            if step < warm:
                return (step + 1) / (warm + 1)
            if not linear:
                return 1.0
            return max(0.0, (total_steps - step) / max(1, total_steps - warm))

        return fn

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW over :meth:`parameter_groups` + a per-step ``LambdaLR`` spanning one IMP round (or the fit)."""
        groups = self.parameter_groups()
        fused = _fused_supported(p for g in groups for p in g["params"])
        optimizer = torch.optim.AdamW(groups, lr=self.lr, betas=self.betas, eps=self.eps, fused=fused)
        trainer = getattr(self, "_trainer", None)
        total = schedule_length(trainer)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self.lr_lambda(total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}
