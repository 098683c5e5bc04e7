"""The retrieval loss: softmax over the batch, temperature, logQ, accidental hits, weights."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gamerec_assets.core.training.loss import (
    ACCIDENTAL_HIT_LOGIT,
    RetrievalLoss,
    item_log_frequencies,
    playtime_weights,
)

LOGITS = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.0, 3.0], [0.0, 0.0, 0.0]])
IDENTITY = torch.eye(3)
"""Users as LOGITS and items as the identity: user @ items.T is LOGITS itself."""


def by_hand(logits: torch.Tensor) -> list[float]:
    rows = []
    for row in range(len(logits)):
        values = logits[row].tolist()
        rows.append(-(values[row] - math.log(sum(math.exp(v) for v in values))))
    return rows


def test_loss_matches_hand_computation():
    expected = sum(by_hand(LOGITS)) / 3
    loss = RetrievalLoss()(LOGITS, IDENTITY, torch.tensor([0, 1, 2]))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx((0.16985 + 2.19673 + math.log(3)) / 3, abs=1e-4)


def test_loss_of_one_pair_is_zero():
    assert RetrievalLoss()(torch.ones(1, 2), torch.ones(1, 2), torch.tensor([4])).item() == 0.0


def test_weighted_loss_is_weighted_mean_of_row_losses():
    weights = torch.tensor([1.0, 2.0, 0.5])
    rows = by_hand(LOGITS)
    expected = sum(w * r for w, r in zip(weights.tolist(), rows)) / 3.5
    loss = RetrievalLoss()(LOGITS, IDENTITY, torch.tensor([0, 1, 2]), weights=weights)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert expected != pytest.approx(sum(rows) / 3, rel=1e-3)
    equal = RetrievalLoss()(
        LOGITS, IDENTITY, torch.tensor([0, 1, 2]), weights=torch.full((3,), 4.0)
    )
    assert equal.item() == pytest.approx(sum(rows) / 3, rel=1e-6)  # equal weights: unweighted


def test_temperature_divides_the_scores():
    logits = RetrievalLoss(temperature=0.5).logits(
        LOGITS, IDENTITY, torch.arange(3), torch.arange(3)
    )
    assert torch.allclose(logits, LOGITS / 0.5)


def test_accidental_hits_mask_only_off_diagonal_copies():
    loss = RetrievalLoss(mask_accidental_hits=True)
    masked = loss.logits(LOGITS, IDENTITY, torch.tensor([4, 7, 4]), torch.arange(3))
    assert masked[0, 2].item() == ACCIDENTAL_HIT_LOGIT
    assert masked[2, 0].item() == ACCIDENTAL_HIT_LOGIT
    keep = torch.ones(3, 3, dtype=torch.bool)
    keep[0, 2] = keep[2, 0] = False
    assert torch.equal(masked[keep], LOGITS[keep])  # diagonal and every other entry unchanged
    unique = loss.logits(LOGITS, IDENTITY, torch.tensor([3, 1, 2]), torch.arange(3))
    assert torch.equal(unique, LOGITS)  # nothing to mask without duplicates


def test_masked_loss_drops_the_copies_from_the_negatives():
    logits = torch.tensor([[1.0, 0.5, 2.0], [0.3, -1.0, 0.7], [1.5, 0.2, 0.4]])
    loss = RetrievalLoss(mask_accidental_hits=True)
    items = torch.tensor([4, 7, 4])
    masked = loss.logits(logits, IDENTITY, items, torch.arange(3))
    losses = F.cross_entropy(masked, torch.arange(3), reduction="none")
    expected = torch.stack(
        [
            -torch.log_softmax(logits[0, [0, 1]], dim=0)[0],  # column 2 removed
            -torch.log_softmax(logits[1], dim=0)[1],  # nothing to remove
            -torch.log_softmax(logits[2, [1, 2]], dim=0)[1],  # column 0 removed
        ]
    )
    assert torch.allclose(losses, expected, atol=1e-5)
    assert loss(logits, IDENTITY, items).item() == pytest.approx(expected.mean().item(), abs=1e-5)
    unmasked = F.cross_entropy(logits, torch.arange(3), reduction="none")
    assert unmasked[0] - losses[0] > 0.1 and unmasked[2] - losses[2] > 0.1


def test_item_log_frequencies_values():
    log_q = item_log_frequencies(np.array([0, 0, 0, 2, 2, 4]), n_items=6)
    assert log_q.dtype == torch.float32 and log_q.shape == (6,)
    expected = np.log(np.array([3, 1, 2, 1, 1, 1]) / 6.0)  # unseen items 1, 3, 5: log(1/6)
    assert np.allclose(log_q.numpy(), expected, atol=1e-6)


def test_logq_subtracts_each_columns_log_frequency():
    users = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    item_table = torch.tensor([[0.5, 0.5], [1.0, -1.0], [2.0, 0.0], [0.0, 0.3]])
    log_q = item_log_frequencies(np.array([0] * 8 + [1, 2]), n_items=4)  # item 0 frequent
    items = torch.tensor([0, 2, 3])
    logits = RetrievalLoss(0.5, log_q).logits(users, item_table[items], items, torch.arange(3))
    scores = users @ item_table[items].T
    expected = scores / 0.5 - torch.tensor(np.log([0.8, 0.1, 0.1]), dtype=torch.float32)[None, :]
    assert torch.allclose(logits, expected, atol=1e-5)
    without = RetrievalLoss(0.5).logits(users, item_table[items], items, torch.arange(3))
    assert torch.allclose(without, scores / 0.5, atol=1e-6)


def test_logq_with_equal_scores_lifts_rare_columns_by_their_log_ratio():
    log_q = item_log_frequencies(np.array([0] * 9 + [1]), n_items=3)  # item 0: 0.9, item 1: 0.1
    zeros = torch.zeros(2, 2)
    logits = RetrievalLoss(1.0, log_q).logits(zeros, zeros, torch.tensor([0, 1]), torch.arange(2))
    # logits = score / temperature - log_q[item]: log_q < 0, so every column is raised, the rare
    # item's most: -log(0.9) for column 0, -log(0.1) for column 1, the same in every row
    assert torch.allclose(logits[:, 0], torch.full((2,), -np.log(0.9)), atol=1e-6)
    assert torch.allclose(logits[:, 1], torch.full((2,), -np.log(0.1)), atol=1e-6)


def test_masking_comes_after_the_logq_shift():
    users = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    item_table = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    log_q = item_log_frequencies(np.array([0, 0, 1]), n_items=2)
    items = torch.tensor([0, 1, 0])
    loss = RetrievalLoss(2.0, log_q, mask_accidental_hits=True)
    logits = loss.logits(users, item_table[items], items, torch.arange(3))
    assert logits[0, 2].item() == ACCIDENTAL_HIT_LOGIT == logits[2, 0].item()
    assert logits[0, 0].item() == pytest.approx(1.0 / 2.0 - np.log(2 / 3), abs=1e-6)
    assert logits[2, 1].item() == pytest.approx(1.0 / 2.0 - np.log(1 / 3), abs=1e-6)


@pytest.mark.parametrize("weighted", [False, True])
def test_shares_of_a_global_batch_add_up_to_its_loss(weighted):
    """Two processes each score their rows against the whole batch: the mean of their shares
    (what DDP averages) is the single-process loss of the batch."""
    generator = torch.Generator().manual_seed(0)
    users, items = torch.randn(6, 4, generator=generator), torch.randn(6, 4, generator=generator)
    ids = torch.tensor([3, 1, 3, 0, 2, 1])
    weights = torch.rand(6, generator=generator) + 0.5 if weighted else None
    loss = RetrievalLoss(0.3, item_log_frequencies(np.array([0, 1, 1, 2, 3, 3]), 4), True)
    whole = loss(users, items, ids, weights=weights)
    shares = [
        loss(users[rows], items, ids, positives=rows, weights=weights, world_size=2)
        for rows in (torch.arange(0, 3), torch.arange(3, 6))
    ]
    assert ((shares[0] + shares[1]) / 2).item() == pytest.approx(whole.item(), rel=1e-6)


def test_playtime_weights_properties():
    hours = np.array([0.0, 1.0, 10.0, 100.0, np.nan, -5.0])
    weights = playtime_weights(hours)
    assert weights.dtype == torch.float32 and weights.shape == (6,)
    assert weights.mean().item() == pytest.approx(1.0, abs=1e-6)
    assert weights[0] < weights[1] < weights[2] < weights[3]
    assert weights[0] > 0
    assert weights[4] == weights[0]  # NaN hours count as zero hours
    assert weights[5] == weights[0]  # negative hours too
    raw = 1.0 + np.log1p(np.array([0.0, 1.0, 10.0, 100.0, 0.0, 0.0]))
    assert np.allclose(weights.numpy(), raw / raw.mean(), atol=1e-6)
    assert torch.allclose(playtime_weights(np.full(4, 7.0)), torch.ones(4))


def test_uniform_negatives_are_extra_columns_with_the_mixture_correction():
    """Two in-batch items drawn by frequency plus three uniform draws from a catalog of 4:
    each candidate's expected count is 2 * share + 3 / 4, and its log is what is subtracted,
    for in-batch and uniform columns alike; a uniform draw of a row's own game is masked."""
    log_q = item_log_frequencies(np.array([0, 0, 0, 1]), n_items=4)  # shares .75 .25 0 0
    shares = np.exp(log_q.numpy())
    users = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    table = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, -0.5]])
    batch, uniform = torch.tensor([0, 1]), torch.tensor([2, 0, 3])
    loss = RetrievalLoss(0.5, log_q, mask_accidental_hits=True)
    logits = loss.logits(users, table[batch], batch, torch.arange(2), (table[uniform], uniform))
    assert logits.shape == (2, 5)
    columns = torch.cat([batch, uniform])
    expected = users @ table[columns].T / 0.5 - torch.tensor(
        np.log(2 * shares[columns.numpy()] + 3 / 4), dtype=torch.float32
    )
    expected[0, 3] = ACCIDENTAL_HIT_LOGIT  # row 0's own game 0, drawn uniformly
    assert torch.allclose(logits, expected, atol=1e-5)
    plain = RetrievalLoss(0.5).logits(users, table[batch], batch, torch.arange(2))
    none = (table[:0], batch[:0])
    assert torch.allclose(
        RetrievalLoss(0.5).logits(users, table[batch], batch, torch.arange(2), none), plain
    )
    with_uniform = loss(users, table[batch], batch, uniform=(table[uniform], uniform))
    without = RetrievalLoss(0.5, log_q, True)(users, table[batch], batch)
    assert with_uniform.item() > without.item()  # more negatives, a harder softmax
