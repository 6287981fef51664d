"""Image-text retrieval (Flickr30k): an image-text matching score, ranked over the full caption x image product.

Training batches carry matched pairs and sampled negatives (``Flickr30kDataModule(num_negatives=...)``) with
``itm_labels [B]`` (1 matched, 0 not); the score ``Linear(H, 1)`` on the pooled output (UNITER's ``rank_output``)
is trained with binary cross-entropy. (UNITER's Flickr30k recipe uses a hinge ranking loss over hard negatives; the
BCE objective here is UNITER's ITM pre-training objective on the same head.)

Evaluation batches cover the cross product; each row carries ``txt_index`` and ``img_index``. The scores are written
into a ``[N_txt, N_img]`` matrix held by :class:`~lightning_tickets.metrics.recall.RetrievalRecall` (the only
memory that grows with the split: 5,000 x 1,000 floats = 20 MB), which gives IR (text -> image) and TR (image ->
text) Recall@1/5/10. Logged: ``val/ir_r1``, ``val/ir_r5``, ``val/ir_r10``, ``val/tr_r1``, ``val/tr_r5``,
``val/tr_r10``, ``val/rsum`` (sum of the six recalls, in ``[0, 6]``) and the same under ``test/``; ``train/loss``;
``val/loss`` only when evaluation rows carry ``itm_labels``.

The matrix size and ground truth come, in this order, from the constructor's ``txt2img`` / ``img2txts``, from the
datamodule's ``retrieval_index(split)`` (``Flickr30kDataModule``: split ``"val"`` in validation, ``"test"`` in
testing), or from the datamodule's ``txt2img`` / ``img2txts`` attributes. The matrix is allocated at the start of
each evaluation epoch and freed at its end.

Example:
    >>> import torch
    >>> from lightning_tickets.backbones import Uniter
    >>> model = ImageTextRetrieval(Uniter("tiny", img_dim=6), txt2img=[0, 0, 1], img2txts=[[0, 1], [2]])
    >>> batch = {"input_ids": torch.tensor([[101, 5, 102]] * 2), "img_feat": torch.randn(2, 2, 6),
    ...          "img_pos_feat": torch.rand(2, 2, 7), "itm_labels": torch.tensor([1, 0])}
    >>> model(batch).shape
    torch.Size([2])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lightning_tickets.backbones.base import VLBackbone
from lightning_tickets.metrics.recall import RetrievalRecall
from lightning_tickets.tasks.adversarial import Logits
from lightning_tickets.tasks.base import StepOutput, TaskModule, init_head_


def _as_index(value: Any, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(value, dtype=torch.long, device=device).reshape(-1)


class ImageTextRetrieval(TaskModule):
    """Flickr30k (or COCO) image-text retrieval fine-tuning.

    Args:
        backbone: any :class:`~lightning_tickets.backbones.VLBackbone`.
        txt2img: ground truth of the evaluation split (caption -> image index); ``None``: ask the datamodule.
        img2txts: image -> caption indices (optional, checked against ``txt2img``).
        top_k: the K of Recall@K.
        head_dropout: dropout before the score layer.
        **kwargs: training settings (``lr``, ``warmup_steps``, ``adversarial``, ...), see
            :class:`~lightning_tickets.tasks.base.TaskModule`.
    """

    def __init__(
        self,
        backbone: VLBackbone,
        txt2img: list[int] | None = None,
        img2txts: list[list[int]] | None = None,
        top_k: list[int] | tuple[int, ...] = (1, 5, 10),
        head_dropout: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(backbone, **kwargs)
        if img2txts is not None and txt2img is None:
            raise ValueError("img2txts needs txt2img too")
        self.txt2img = None if txt2img is None else [int(i) for i in txt2img]
        self.img2txts = None if img2txts is None else [[int(t) for t in ts] for ts in img2txts]
        self.top_k = tuple(int(k) for k in top_k)
        self.head = nn.Sequential(nn.Dropout(head_dropout), nn.Linear(backbone.hidden_size, 1))
        init_head_(self.head)
        self._recall: dict[str, RetrievalRecall] = {}  # plain dict: allocated per evaluation epoch, never saved

    def forward(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """Matching scores (logits) ``[B]``."""
        return self.head(self.backbone(batch).pooled).squeeze(-1)

    def loss(self, scores: torch.Tensor, itm_labels: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy of the matching logits."""
        return F.binary_cross_entropy_with_logits(scores, itm_labels.to(scores.dtype))

    # ------------------------------------------------------------------ ground truth
    def ground_truth(self, split: str) -> tuple[list[int], list[list[int]] | None]:
        """``(txt2img, img2txts)`` of ``split`` (``"val"`` or ``"test"``); see the module docstring."""
        if self.txt2img is not None:
            return self.txt2img, self.img2txts
        trainer = getattr(self, "_trainer", None)
        dm = getattr(trainer, "datamodule", None) if trainer is not None else None
        if dm is not None and callable(getattr(dm, "retrieval_index", None)):
            txt2img, img2txts = dm.retrieval_index(split)
            return list(txt2img), img2txts
        if dm is not None and getattr(dm, "txt2img", None) is not None:
            return list(dm.txt2img), getattr(dm, "img2txts", None)
        raise RuntimeError(
            "ImageTextRetrieval needs the evaluation ground truth: pass txt2img (and img2txts) to the constructor, or "
            "fit with a datamodule exposing retrieval_index(split) or txt2img/img2txts (Flickr30kDataModule)"
        )

    def _start_eval(self, stage: str) -> None:
        txt2img, img2txts = self.ground_truth(stage)
        warn = not (self._trainer is not None and self.trainer.sanity_checking)
        self._recall[stage] = RetrievalRecall(txt2img, img2txts, self.top_k, warn_incomplete=warn).to(self.device)

    def _eval_step(self, batch: Mapping[str, Any], stage: str) -> None:
        if stage not in self._recall:
            self._start_eval(stage)
        scores = self(batch)
        if "itm_labels" in batch:
            self.log(f"{stage}/loss", self.loss(scores, batch["itm_labels"]), batch_size=len(scores), sync_dist=True)
        if "txt_index" not in batch or "img_index" not in batch:
            raise KeyError("retrieval evaluation rows need 'txt_index' and 'img_index' (RetrievalEvalDataset)")
        self._recall[stage].update(
            scores, _as_index(batch["txt_index"], scores.device), _as_index(batch["img_index"], scores.device)
        )

    def _end_eval(self, stage: str) -> None:
        metric = self._recall.pop(stage, None)
        if metric is None:
            return
        values = metric.compute()
        for name, value in values.items():
            self.log(f"{stage}/{name}", value, prog_bar=name in ("rsum", "ir_r1"))
        del metric

    def on_validation_epoch_start(self) -> None:
        self._start_eval("val")

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._end_eval("val")

    def on_test_epoch_start(self) -> None:
        self._start_eval("test")

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._end_eval("test")

    def training_outputs(self, batch: Mapping[str, Any], batch_idx: int) -> StepOutput:
        """Loss and matching logits (a Bernoulli per pair)."""
        scores = self(batch)
        return StepOutput(self.loss(scores, batch["itm_labels"]), scores.shape[0], [Logits(scores, "bernoulli")])

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        """Matching probabilities ``[B]``."""
        return torch.sigmoid(self(batch))
