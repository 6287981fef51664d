"""Vision-and-language pre-training objectives (UNITER): MLM, ITM, MRFR and MRC-KL.

Objectives (``tasks``):

* ``"mlm"`` -- masked language modelling: BERT's prediction head (``Linear(H, H) -> GELU -> LayerNorm``, then the
  vocabulary projection) at the positions where ``mlm_labels != -100``; cross-entropy. The projection is **tied**
  to the backbone's word embeddings by default (``tie_mlm_weights=True``, as BERT/UNITER; only a vocabulary bias is
  new) or a separate ``Linear(H, vocab_size)``.
* ``"itm"`` -- image-text matching: ``Linear(H, 2)`` on the pooled output; cross-entropy on ``itm_labels``.
* ``"mrfr"`` -- masked region feature regression: ``Linear(H, H) -> GELU -> LayerNorm -> Linear(H, img_dim)`` at the
  regions where ``img_masked``; mean squared error to the original ``img_feat`` (untied, UNITER ties the last layer
  to the transposed ``img_linear``).
* ``"mrc"`` -- masked region classification with KL divergence (MRC-kl): the same MLP body ``-> Linear(H,
  mrc_num_classes)``; ``KL(img_soft_label || softmax(prediction))`` summed over classes, averaged over masked
  regions. Skipped for batches without ``img_soft_label``.

Region objectives need a region backbone (``img_dim``: UNITER, LXMERT); requesting them with ViLT raises a
``ValueError`` (ViLT: ``tasks=["mlm", "itm"]``). WRA (UNITER's optimal-transport word-region alignment) is not
implemented.

MLM and MRM are computed on matched pairs only (rows with ``itm_labels == 1`` when the batch has ITM labels). The
task zeroes the features of masked regions itself (any region backbone) and keeps ``img_masked`` in the batch (UNITER
adds its mask embedding there); the regression target is the batch's original ``img_feat``.

Mixing (``mix``):

* ``"sample"`` (default, UNITER): each training batch trains **one** objective, drawn with probabilities
  proportional to ``task_weights`` among the objectives the batch supports, with UNITER's conditional masking --
  MLM sees masked text and intact regions, MRFR/MRC intact text (``input_ids`` restored from ``mlm_labels``) and
  masked regions, ITM both intact. The draw depends on ``(seed, global_step, batch_idx)`` only, so all DDP ranks
  train the same objective; DDP still needs ``strategy="ddp_find_unused_parameters_true"`` (idle heads).
* ``"sum"``: one forward on the batch as given (masked text *and* masked regions) and
  ``loss = sum(task_weights[t] * loss_t)`` over the supported objectives (cheaper, but ITM sees masked inputs).

Validation/test run every supported objective (in ``"sample"`` mode each on its own view) and log
``<stage>/<task>_loss`` for each objective, ``<stage>/mlm_acc`` (masked-token accuracy), ``<stage>/itm_acc`` and
``<stage>/loss = sum(task_weights[t] * <stage>/<task>_loss)`` (monitor it with ``mode="min"``, or monitor
``val/mlm_acc``). Training logs ``train/loss`` and ``train/<task>_loss``.

Example:
    >>> import torch
    >>> from lightning_tickets.backbones import Uniter
    >>> model = Pretraining(Uniter("tiny", img_dim=6), tasks=["mlm", "itm", "mrfr"], mix="sum")
    >>> batch = {"input_ids": torch.tensor([[101, 103, 9, 102]] * 2),
    ...          "mlm_labels": torch.tensor([[-100, 7, -100, -100]] * 2),
    ...          "img_feat": torch.randn(2, 3, 6), "img_pos_feat": torch.rand(2, 3, 7),
    ...          "img_masked": torch.tensor([[True, False, False]] * 2), "itm_labels": torch.tensor([1, 0])}
    >>> sorted(model.task_losses(batch, model.available_tasks(batch), joint=True))
    ['itm', 'mlm', 'mrfr']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric

from lightning_tickets.backbones.base import BackboneOutput, VLBackbone
from lightning_tickets.metrics.accuracy import ArgmaxAccuracy
from lightning_tickets.tasks.adversarial import Logits
from lightning_tickets.tasks.base import StepOutput, TaskModule, init_head_
from lightning_tickets.tasks.refexp import region_hidden_states, region_mask

#: Objectives this module knows, in UNITER's order.
TASKS = ("mlm", "itm", "mrfr", "mrc")
#: Objectives that need region features.
REGION_TASKS = ("mrfr", "mrc")


class Transform(nn.Sequential):
    """``Linear(H, H) -> GELU -> LayerNorm`` (BERT's prediction-head transform)."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__(nn.Linear(hidden_size, hidden_size), nn.GELU(), nn.LayerNorm(hidden_size, eps=1e-12))


class MLMHead(nn.Module):
    """BERT's MLM head: transform, then ``hidden @ W^T + bias`` with ``W`` the tied word embeddings (passed to
    :meth:`forward`) or an own ``decoder`` weight."""

    def __init__(self, hidden_size: int, vocab_size: int, tied: bool = True) -> None:
        super().__init__()
        self.transform = Transform(hidden_size)
        self.decoder = None if tied else nn.Linear(hidden_size, vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, hidden: torch.Tensor, tied_weight: torch.Tensor | None = None) -> torch.Tensor:
        h = self.transform(hidden)
        weight = self.decoder.weight if self.decoder is not None else tied_weight
        if weight is None:
            raise ValueError("a tied MLM head needs the word-embedding weight")
        return F.linear(h, weight, self.bias)


class RegionHead(nn.Sequential):
    """``Transform -> Linear(H, out_dim)`` per masked region (MRFR: ``img_dim``, MRC: number of classes)."""

    def __init__(self, hidden_size: int, out_dim: int) -> None:
        super().__init__(Transform(hidden_size), nn.Linear(hidden_size, out_dim))


@dataclass
class TaskResult:
    """One objective on one batch: the loss, how many units (tokens/pairs/regions) it averages over, and
    predictions/targets for accuracies (MLM, ITM)."""

    loss: torch.Tensor
    count: int
    logits: torch.Tensor | None = None
    targets: torch.Tensor | None = None


def find_word_embeddings(backbone: nn.Module) -> tuple[str, nn.Embedding]:
    """``(qualified name, module)`` of the backbone's word-embedding table (``*word_embeddings``)."""
    for name, module in backbone.named_modules():
        if name.split(".")[-1] == "word_embeddings" and isinstance(module, nn.Embedding):
            return name, module
    raise ValueError(
        f"{type(backbone).__name__} has no '*word_embeddings' nn.Embedding to tie the MLM head to: pass "
        "tie_mlm_weights=False and vocab_size=..."
    )


def _matched_rows(batch: Mapping[str, Any], n: int, device: torch.device) -> torch.Tensor:
    labels = batch.get("itm_labels")
    if labels is None:
        return torch.ones(n, dtype=torch.bool, device=device)
    return torch.as_tensor(labels, device=device).reshape(-1).bool()


def _take_rows(batch: Mapping[str, Any], rows: torch.Tensor) -> dict[str, Any]:
    """Index every per-row entry (tensors / lists with the batch's first dimension) with ``rows`` (long)."""
    n = batch["input_ids"].shape[0]
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == n:
            out[key] = value[rows.to(value.device)]
        elif isinstance(value, list) and len(value) == n:
            out[key] = [value[int(i)] for i in rows]
        else:
            out[key] = value
    return out


class Pretraining(TaskModule):
    """UNITER-style pre-training (the paper's pre-training tickets: MLM + MRM + ITM).

    Args:
        backbone: any :class:`~lightning_tickets.backbones.VLBackbone` (region objectives: UNITER, LXMERT).
        tasks: objectives among ``"mlm"``, ``"itm"``, ``"mrfr"``, ``"mrc"``.
        task_weights: one weight per objective (sampling weights in ``"sample"`` mode, loss weights in ``"sum"``
            mode and in ``<stage>/loss``); default all 1.
        mix: ``"sample"`` (one objective per batch, UNITER) or ``"sum"`` (weighted sum on one forward).
        tie_mlm_weights: tie the MLM vocabulary projection to the backbone's word embeddings.
        vocab_size: vocabulary size of an untied MLM head (default: the backbone's ``config.vocab_size``).
        mrc_num_classes: detector classes of ``img_soft_label`` (1601 for the Visual Genome BUTD detector).
        seed: seed of the per-batch objective draw.
        **kwargs: training settings (``lr``, ``warmup_steps``, ``adversarial``, ...), see
            :class:`~lightning_tickets.tasks.base.TaskModule`.
    """

    def __init__(
        self,
        backbone: VLBackbone,
        tasks: Sequence[str] = ("mlm", "itm", "mrfr", "mrc"),
        task_weights: Sequence[float] | None = None,
        mix: Literal["sample", "sum"] = "sample",
        tie_mlm_weights: bool = True,
        vocab_size: int | None = None,
        mrc_num_classes: int = 1601,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(backbone, **kwargs)
        tasks = [str(t).lower() for t in tasks]
        unknown = [t for t in tasks if t not in TASKS]
        if unknown or not tasks or len(set(tasks)) != len(tasks):
            raise ValueError(f"tasks={tasks} must be distinct objectives among {list(TASKS)} (WRA is not implemented)")
        region = [t for t in tasks if t in REGION_TASKS]
        img_dim = getattr(backbone, "img_dim", None)
        if region and img_dim is None:
            raise ValueError(
                f"tasks {region} (masked region modelling) need a region-feature backbone (UNITER, LXMERT); "
                f"{type(backbone).__name__} has no regions: use tasks=['mlm', 'itm']"
            )
        weights = [1.0] * len(tasks) if task_weights is None else [float(w) for w in task_weights]
        if len(weights) != len(tasks) or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"task_weights={task_weights} must give one weight >= 0 per task of {tasks}")
        if mix not in ("sample", "sum"):
            raise ValueError(f"mix={mix!r} is unknown; use 'sample' or 'sum'")
        self.tasks = tasks
        self.task_weights = dict(zip(tasks, weights))
        self.mix = mix
        self.seed = int(seed)
        self.tie_mlm_weights = bool(tie_mlm_weights)
        self._word_embeddings_name: str | None = None
        heads: dict[str, nn.Module] = {}
        h = backbone.hidden_size
        if "mlm" in tasks:
            if self.tie_mlm_weights:
                self._word_embeddings_name, emb = find_word_embeddings(backbone)
                vocab = emb.num_embeddings
            else:
                vocab = vocab_size or getattr(getattr(backbone, "config", None), "vocab_size", None)
                if vocab is None:
                    raise ValueError("an untied MLM head needs vocab_size")
            heads["mlm"] = MLMHead(h, int(vocab), tied=self.tie_mlm_weights)
        if "itm" in tasks:
            heads["itm"] = nn.Linear(h, 2)
        if "mrfr" in tasks:
            heads["mrfr"] = RegionHead(h, int(img_dim))
        if "mrc" in tasks:
            heads["mrc"] = RegionHead(h, int(mrc_num_classes))
        self.mrc_num_classes = int(mrc_num_classes)
        self.head = nn.ModuleDict(heads)
        init_head_(self.head)
        self.val_metrics = self._make_metrics()
        self.test_metrics = self._make_metrics()

    def _make_metrics(self) -> nn.ModuleDict:
        metrics: dict[str, nn.Module] = {f"{t}_loss": MeanMetric() for t in self.tasks}
        for t in ("mlm", "itm"):
            if t in self.tasks:
                metrics[f"{t}_acc"] = ArgmaxAccuracy()
        return nn.ModuleDict(metrics)

    # ------------------------------------------------------------------ batches
    def available_tasks(self, batch: Mapping[str, Any]) -> list[str]:
        """The configured objectives this batch has targets for (and, for MLM/MRM, masked units in matched rows)."""
        n = batch["input_ids"].shape[0]
        matched = _matched_rows(batch, n, batch["input_ids"].device)
        out = []
        for t in self.tasks:
            if t == "mlm":
                ok = "mlm_labels" in batch and bool(((batch["mlm_labels"] != -100) & matched[:, None]).any())
            elif t == "itm":
                ok = "itm_labels" in batch
            else:
                masked = batch.get("img_masked")
                ok = masked is not None and bool((masked.bool() & region_mask(batch) & matched[:, None]).any())
                ok = ok and (t == "mrfr" or batch.get("img_soft_label") is not None)
            if ok and self.task_weights[t] > 0:
                out.append(t)
        return out

    def sample_task(self, available: Sequence[str], batch_idx: int = 0) -> str:
        """Draw one objective (probability proportional to its weight); same draw on every rank."""
        weights = torch.tensor([self.task_weights[t] for t in available], dtype=torch.double)
        g = torch.Generator().manual_seed(hash((self.seed, int(self.global_step), int(batch_idx))) & (2**62 - 1))
        return available[int(torch.multinomial(weights, 1, generator=g))]

    @staticmethod
    def view(batch: Mapping[str, Any], text_masked: bool, regions_masked: bool) -> dict[str, Any]:
        """The backbone input: masked or intact text (intact ids restored from ``mlm_labels``), masked (features
        zeroed, ``img_masked`` kept) or intact regions (``img_masked`` dropped)."""
        view = dict(batch)
        labels = batch.get("mlm_labels")
        if not text_masked and labels is not None:
            view["input_ids"] = torch.where(labels != -100, labels, batch["input_ids"])
        masked = batch.get("img_masked")
        if regions_masked and masked is not None:
            view["img_feat"] = batch["img_feat"].masked_fill(masked.bool().unsqueeze(-1), 0.0)
        else:
            view.pop("img_masked", None)
        return view

    # ------------------------------------------------------------------ objectives
    def _zero(self, out: BackboneOutput) -> torch.Tensor:
        return out.pooled.sum() * 0.0

    def _mlm(self, out: BackboneOutput, batch: Mapping[str, Any]) -> TaskResult:
        labels = batch["mlm_labels"]
        matched = _matched_rows(batch, labels.shape[0], labels.device)
        sel = (labels != -100) & matched[:, None]
        if not bool(sel.any()):
            return TaskResult(self._zero(out), 0)
        hidden = out.sequence[:, : labels.shape[1]][sel]  # text positions come first in every backbone
        weight = None
        if self._word_embeddings_name is not None:
            weight = self.backbone.get_submodule(self._word_embeddings_name).weight
        logits = self.head["mlm"](hidden, weight)
        targets = labels[sel]
        return TaskResult(F.cross_entropy(logits, targets), int(targets.numel()), logits, targets)

    def _itm(self, out: BackboneOutput, batch: Mapping[str, Any]) -> TaskResult:
        logits = self.head["itm"](out.pooled)
        targets = torch.as_tensor(batch["itm_labels"], device=logits.device).reshape(-1).long()
        return TaskResult(F.cross_entropy(logits, targets), int(targets.numel()), logits, targets)

    def _masked_regions(self, out: BackboneOutput, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        regions = region_mask(batch)
        matched = _matched_rows(batch, regions.shape[0], regions.device)
        sel = batch["img_masked"].bool() & regions & matched[:, None]
        return region_hidden_states(out, regions)[sel], sel

    def _mrfr(self, out: BackboneOutput, batch: Mapping[str, Any]) -> TaskResult:
        hidden, sel = self._masked_regions(out, batch)
        if not bool(sel.any()):
            return TaskResult(self._zero(out), 0)
        pred = self.head["mrfr"](hidden)
        target = batch["img_feat"][sel].to(pred.dtype)
        return TaskResult(F.mse_loss(pred, target), int(sel.sum()))

    def _mrc(self, out: BackboneOutput, batch: Mapping[str, Any]) -> TaskResult:
        soft = batch["img_soft_label"]
        if soft.shape[-1] != self.mrc_num_classes:
            raise ValueError(
                f"img_soft_label has {soft.shape[-1]} classes but the MRC head has mrc_num_classes="
                f"{self.mrc_num_classes}"
            )
        hidden, sel = self._masked_regions(out, batch)
        if not bool(sel.any()):
            return TaskResult(self._zero(out), 0)
        logits = self.head["mrc"](hidden)
        log_probs = F.log_softmax(logits.float(), dim=-1)
        target = soft[sel].float()
        return TaskResult(F.kl_div(log_probs, target, reduction="batchmean"), int(sel.sum()), logits)

    def task_results(self, batch: Mapping[str, Any], tasks: Sequence[str], joint: bool) -> dict[str, TaskResult]:
        """Run the objectives ``tasks``: on one forward of the masked batch (``joint``) or each on its own view
        (MLM/MRM on matched rows only)."""
        fns = {"mlm": self._mlm, "itm": self._itm, "mrfr": self._mrfr, "mrc": self._mrc}
        if joint:
            regions_masked = any(t in REGION_TASKS for t in tasks)
            out = self.backbone(self.view(batch, text_masked="mlm" in tasks, regions_masked=regions_masked))
            return {t: fns[t](out, batch) for t in tasks}
        results = {}
        for t in tasks:
            src: Mapping[str, Any] = batch
            if t != "itm" and "itm_labels" in batch:
                matched = _matched_rows(batch, batch["input_ids"].shape[0], batch["input_ids"].device)
                if not bool(matched.all()):
                    src = _take_rows(batch, matched.nonzero().squeeze(1))
            view = self.view(src, text_masked=t == "mlm", regions_masked=t in REGION_TASKS)
            results[t] = fns[t](self.backbone(view), src)
        return results

    def task_losses(self, batch: Mapping[str, Any], tasks: Sequence[str], joint: bool) -> dict[str, torch.Tensor]:
        """``{task: loss}`` (see :meth:`task_results`)."""
        return {t: r.loss for t, r in self.task_results(batch, tasks, joint).items()}

    def forward(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Losses of every supported objective on the batch (as configured by ``mix``)."""
        return self.task_losses(batch, self.available_tasks(batch), joint=self.mix == "sum")

    # ------------------------------------------------------------------ steps
    def _available_or_fail(self, batch: Mapping[str, Any]) -> list[str]:
        available = self.available_tasks(batch)
        if not available:
            raise ValueError(
                f"the batch supports none of the objectives {self.tasks}: MLM needs 'mlm_labels', ITM 'itm_labels', "
                "MRFR 'img_masked' (+ regions), MRC also 'img_soft_label' (see data/pretrain_masking.py)"
            )
        return available

    def training_outputs(self, batch: Mapping[str, Any], batch_idx: int) -> StepOutput:
        """Loss of the drawn objective (``"sample"``) or the weighted sum (``"sum"``); predictions for the
        adversarial consistency term: MLM, ITM and MRC logits (softmaxes); MRFR has none (a regression)."""
        available = self._available_or_fail(batch)
        n = batch["input_ids"].shape[0]
        if self.mix == "sample":
            task = self.sample_task(available, batch_idx)
            results = self.task_results(batch, [task], joint=False)
            loss = results[task].loss
        else:
            results = self.task_results(batch, available, joint=True)
            loss = sum(self.task_weights[t] * r.loss for t, r in results.items())
        logits = [Logits(r.logits) for r in results.values() if r.logits is not None]
        return StepOutput(loss, n, logits, {f"train/{t}_loss": r.loss for t, r in results.items()})

    def _eval_step(self, batch: Mapping[str, Any], metrics: nn.ModuleDict) -> None:
        available = self._available_or_fail(batch)
        for t, r in self.task_results(batch, available, joint=self.mix == "sum").items():
            if r.count:
                metrics[f"{t}_loss"].update(r.loss.detach(), r.count)
            if f"{t}_acc" in metrics and r.logits is not None:
                metrics[f"{t}_acc"].update(r.logits, r.targets)

    def _eval_epoch_end(self, stage: str, metrics: nn.ModuleDict) -> None:
        total, seen = None, False
        for name, metric in metrics.items():
            if not metric.update_called:
                continue
            value = metric.compute()
            self.log(f"{stage}/{name}", value, prog_bar=name == "mlm_acc")
            if name.endswith("_loss"):
                term = self.task_weights[name[: -len("_loss")]] * value
                total = term if total is None else total + term
                seen = True
            metric.reset()
        if seen:
            self.log(f"{stage}/loss", total)

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val", self.val_metrics)

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test", self.test_metrics)
