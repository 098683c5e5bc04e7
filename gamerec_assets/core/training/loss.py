"""The retrieval loss, apart from the towers: an in-batch softmax with its corrections.

The shape of TensorFlow Recommenders' `tasks.Retrieval`: the towers produce user and item
vectors; this object owns everything that turns them into a loss. Each user's own item (its
positive) competes with every other item of the batch (its negatives):
- `temperature`: scores are divided by it;
- `log_q`: log(sampling probability) of each item, subtracted from its logits, so popular
  games are not over-penalised for being sampled as negatives more often;
- accidental hits: the same game twice in a batch is not its own negative (its logit is set
  to a large finite negative number: -inf in a fully masked row would give NaN);
- uniform negatives: extra games drawn uniformly from the catalog, shared by the batch, so
  rare games are negatives too (in-batch negatives are popular ones); the logQ correction is
  then that of the mixture of both samplers;
- positive weights (e.g. from play time): the loss is the weighted mean over the batch.
In a job of several processes, `item_vectors`/`item_ids` are the whole global batch and the
users are this process's share; the loss is scaled so that DDP's average over processes is
the loss of the global batch.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F

ACCIDENTAL_HIT_LOGIT = -1e9


class RetrievalLoss:
    def __init__(
        self,
        temperature: float = 1.0,
        log_q: torch.Tensor | None = None,
        mask_accidental_hits: bool = False,
    ) -> None:
        self.temperature = temperature
        self.log_q = log_q
        self.mask_accidental_hits = mask_accidental_hits

    def correction(self, item_ids: torch.Tensor, batch_size: int, n_uniform: int) -> torch.Tensor:
        """log(expected count of each item among a row's candidates): `batch_size` in-batch
        items drawn by training frequency plus `n_uniform` drawn uniformly from the catalog
        (the mixed-negative correction of Yang et al. 2020). With no uniform ones it is
        log_q plus a constant, which the softmax ignores."""
        log_q = self.log_q[item_ids]
        if n_uniform == 0:
            return log_q
        uniform = math.log(n_uniform / len(self.log_q))
        return torch.logaddexp(log_q + math.log(batch_size), torch.full_like(log_q, uniform))

    def logits(
        self,
        user_vectors: torch.Tensor,
        item_vectors: torch.Tensor,
        item_ids: torch.Tensor,
        positives: torch.Tensor,
        uniform: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """[users, batch (+ uniform)] logits: row b scores user b against every item of the
        batch, then against the `uniform` negatives (their vectors, their ids) when given;
        `positives[b]` is the column of user b's own item."""
        own = item_ids[positives]
        if uniform is not None:
            item_vectors = torch.cat([item_vectors, uniform[0]])
            item_ids = torch.cat([item_ids, uniform[1]])
        n_uniform = 0 if uniform is None else len(uniform[1])
        logits = user_vectors @ item_vectors.T / self.temperature
        if self.log_q is not None:
            correction = self.correction(item_ids, len(item_ids) - n_uniform, n_uniform)
            logits = logits - correction[None, :]
        if self.mask_accidental_hits:
            same_item = own[:, None] == item_ids[None, :]
            same_item[torch.arange(len(positives), device=same_item.device), positives] = False
            logits = logits.masked_fill(same_item, ACCIDENTAL_HIT_LOGIT)
        return logits

    def __call__(
        self,
        user_vectors: torch.Tensor,
        item_vectors: torch.Tensor,
        item_ids: torch.Tensor,
        positives: torch.Tensor | None = None,
        weights: torch.Tensor | None = None,
        world_size: int = 1,
        uniform: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The (weighted) mean softmax loss of the batch, or this process's share of it.

        `weights` are those of every pair of the (global) batch; `positives` defaults to the
        diagonal (a single process, where user b's item is item b).
        """
        if positives is None:
            positives = torch.arange(len(user_vectors), device=user_vectors.device)
        logits = self.logits(user_vectors, item_vectors, item_ids, positives, uniform)
        row_losses = F.cross_entropy(logits, positives, reduction="none")
        if weights is None:
            return row_losses.sum() * world_size / len(item_ids)
        return (row_losses * weights[positives]).sum() * world_size / weights.sum()


def item_log_frequencies(items: np.ndarray, n_items: int) -> torch.Tensor:
    """log(share of training pairs) per item: its in-batch sampling probability, for logQ."""
    counts = np.bincount(items, minlength=n_items).astype(np.float64)
    return torch.from_numpy(np.log(np.maximum(counts, 1.0) / len(items))).float()


def playtime_weights(hours: np.ndarray) -> torch.Tensor:
    """1 + log1p(hours), scaled to mean 1: games played longer count more, none count zero."""
    weights = 1.0 + np.log1p(np.maximum(np.nan_to_num(hours), 0.0))
    return torch.from_numpy(weights / weights.mean()).float()
