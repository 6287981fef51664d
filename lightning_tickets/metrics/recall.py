"""Image-text retrieval Recall@K (IR: text -> image, TR: image -> text) over a score matrix, as a torchmetrics
``Metric``.

The metric holds one ``[N_txt, N_img]`` float32 score matrix (its only state; 5,000 captions x 1,000 images = 20 MB)
that :meth:`RetrievalRecall.update` fills block by block from ``(score, txt_index, img_index)`` triples, so the
full cross product can be evaluated in any batch order. Unfilled entries stay ``-inf``. Across processes the
matrix is reduced with ``"max"``: every rank fills its own entries (a ``DistributedSampler``'s padding duplicates
only repeat the same value).

Ranks are **pessimistic under ties**: a query's hit rank is the number of irrelevant items scoring *at least* as
high as its best relevant item, so a collapsed model that gives every pair the same score gets Recall@K = K/N, not
1.0 (this matters when comparing heavily pruned tickets). Image -> text queries have several relevant captions
(Flickr30k: 5); the best-ranked one counts (UNITER's ``itm_eval``).

Example:
    >>> import torch
    >>> metric = RetrievalRecall(txt2img=[0, 0, 1], top_k=(1, 2))
    >>> scores = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]])  # [N_txt=3, N_img=2]; caption 1 -> image 1
    >>> t, i = torch.meshgrid(torch.arange(3), torch.arange(2), indexing="ij")
    >>> metric.update(scores.flatten(), t.flatten(), i.flatten())
    >>> {k: round(float(v), 4) for k, v in metric.compute().items()}
    {'ir_r1': 0.6667, 'ir_r2': 1.0, 'tr_r1': 0.5, 'tr_r2': 1.0, 'rsum': 3.1667}
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torchmetrics import Metric


def recall_at_k(
    scores: torch.Tensor, relevant: torch.Tensor, top_k: Sequence[int] = (1, 5, 10)
) -> dict[int, torch.Tensor]:
    """Hits@K of each query row of ``scores [Q, N]`` given a bool ``relevant [Q, N]`` mask (pessimistic ties).

    Returns ``{k: bool [Q]}``; a query without a relevant item never hits.

    Example:
        >>> s = torch.tensor([[0.5, 0.5, 0.1], [0.1, 0.2, 0.3]])
        >>> rel = torch.tensor([[True, False, False], [True, False, False]])
        >>> {k: v.tolist() for k, v in recall_at_k(s, rel, (1, 2)).items()}
        {1: [False, False], 2: [True, False]}
    """
    neg_inf = torch.tensor(float("-inf"), dtype=scores.dtype, device=scores.device)
    best = torch.where(relevant, scores, neg_inf).amax(dim=1, keepdim=True)
    rank = ((scores >= best) & ~relevant).sum(dim=1)
    has_rel = relevant.any(dim=1)
    return {k: (rank < k) & has_rel for k in top_k}


class RetrievalRecall(Metric):
    """IR and TR Recall@K from a ``[N_txt, N_img]`` score matrix filled by ``update``.

    Args:
        txt2img: image index of each caption (``N_txt`` entries); defines the ground truth.
        img2txts: caption indices of each image (``N_img`` lists). Optional: checked against ``txt2img`` and used
            for ``N_img`` (images without captions are skipped as TR queries); default ``N_img = max(txt2img) + 1``.
        top_k: the K of Recall@K.
        chunk_size: query rows ranked at a time in :meth:`compute` (bounds its temporary memory).
        warn_incomplete: warn in :meth:`compute` when some (caption, image) pairs were never scored.

    ``update(scores, txt_index, img_index)``: 1-d (or flattenable) tensors of equal length. ``compute()`` returns
    ``{"ir_r1", ..., "tr_r1", ..., "rsum"}`` with recalls in ``[0, 1]`` and ``rsum`` their sum (``[0, 2 * len(top_k)]``;
    multiply by 100 for the usual percent RSUM).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    scores: torch.Tensor

    def __init__(
        self,
        txt2img: Sequence[int],
        img2txts: Sequence[Sequence[int]] | None = None,
        top_k: Sequence[int] = (1, 5, 10),
        chunk_size: int = 1024,
        warn_incomplete: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        gt = torch.as_tensor(list(txt2img), dtype=torch.long)
        if gt.dim() != 1 or gt.numel() == 0 or int(gt.min()) < 0:
            raise ValueError("txt2img must be a non-empty list of image indices >= 0 (one per caption)")
        num_images = int(gt.max()) + 1
        if img2txts is not None:
            num_images = len(img2txts)
            if num_images < int(gt.max()) + 1:
                raise ValueError(f"txt2img names image {int(gt.max())} but img2txts has only {num_images} images")
            for i, txts in enumerate(img2txts):
                for t in txts:
                    if not 0 <= int(t) < gt.numel() or int(gt[int(t)]) != i:
                        raise ValueError(f"img2txts[{i}] lists caption {t}, whose txt2img entry is not {i}")
            if sum(len(x) for x in img2txts) != gt.numel():
                raise ValueError("img2txts and txt2img disagree: some captions are missing from img2txts")
        if not top_k or any(int(k) < 1 for k in top_k):
            raise ValueError(f"top_k must be positive integers, got {list(top_k)}")
        self.top_k = tuple(int(k) for k in top_k)
        self.chunk_size = int(chunk_size)
        self.warn_incomplete = bool(warn_incomplete)
        self.num_texts, self.num_images = gt.numel(), num_images
        self.register_buffer("txt2img", gt, persistent=False)
        self.add_state("scores", default=torch.full((self.num_texts, num_images), float("-inf")), dist_reduce_fx="max")

    def update(self, scores: torch.Tensor, txt_index: torch.Tensor, img_index: torch.Tensor) -> None:
        """Write ``scores[k]`` at ``(txt_index[k], img_index[k])``."""
        scores, txt_index, img_index = scores.reshape(-1), txt_index.reshape(-1), img_index.reshape(-1)
        if not scores.numel() == txt_index.numel() == img_index.numel():
            raise ValueError(
                f"scores ({scores.numel()}), txt_index ({txt_index.numel()}) and img_index ({img_index.numel()}) "
                "must have the same length"
            )
        t, i = txt_index.long().to(self.scores.device), img_index.long().to(self.scores.device)
        if scores.numel() and (
            int(t.min()) < 0 or int(t.max()) >= self.num_texts or int(i.min()) < 0 or int(i.max()) >= self.num_images
        ):
            raise IndexError(
                f"txt_index/img_index outside the [{self.num_texts}, {self.num_images}] score matrix: the ground "
                "truth (txt2img/img2txts) belongs to another split?"
            )
        self.scores[t, i] = scores.detach().to(self.scores.dtype)

    def filled_fraction(self) -> float:
        """Fraction of (caption, image) pairs scored so far (local state)."""
        return float(torch.isfinite(self.scores).float().mean())

    def compute(self) -> dict[str, torch.Tensor]:
        """IR/TR Recall@K and their sum."""
        scores = self.scores
        if self.warn_incomplete:
            missing = int((~torch.isfinite(scores)).sum())
            if missing:
                rank_zero_warn(
                    f"RetrievalRecall: {missing} of {scores.numel()} (caption, image) pairs were not scored; they "
                    "rank last (limit_val_batches < 1.0 or a partial evaluation set?)"
                )
        gt = self.txt2img.to(scores.device)
        img_ids = torch.arange(self.num_images, device=scores.device)
        ir = {k: torch.zeros((), dtype=torch.long, device=scores.device) for k in self.top_k}
        tr = {k: torch.zeros((), dtype=torch.long, device=scores.device) for k in self.top_k}
        for start in range(0, self.num_texts, self.chunk_size):  # text -> image queries
            rows = slice(start, start + self.chunk_size)
            hits = recall_at_k(scores[rows], gt[rows, None] == img_ids[None, :], self.top_k)
            for k in self.top_k:
                ir[k] += hits[k].sum()
        tr_queries = torch.zeros((), dtype=torch.long, device=scores.device)
        for start in range(0, self.num_images, self.chunk_size):  # image -> text queries
            cols = img_ids[start : start + self.chunk_size]
            relevant = cols[:, None] == gt[None, :]
            tr_queries += relevant.any(dim=1).sum()
            hits = recall_at_k(scores[:, cols].T, relevant, self.top_k)
            for k in self.top_k:
                tr[k] += hits[k].sum()
        out: dict[str, torch.Tensor] = {}
        for name, counts, n in (("ir", ir, self.num_texts), ("tr", tr, int(tr_queries))):
            for k in self.top_k:
                out[f"{name}_r{k}"] = (counts[k].double() / max(1, n)).float()
        out["rsum"] = torch.stack(list(out.values())).sum()
        return out
