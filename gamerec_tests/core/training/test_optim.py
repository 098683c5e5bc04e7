"""RowAdam: lazy Adam on the rows a batch touched, checked against a slow reference and
against torch's SparseAdam, which implements the same rule."""

import math

import pytest
import torch

from gamerec_assets.core.training.optim import RowAdam, distinct_rows


def reference_lazy_adam(table, batches, lr, betas=(0.9, 0.999), eps=1e-8, decay=0.0):
    """Row by row, in plain Python floats, Adam as Kingma and Ba write it: only rows with a
    gradient change, and one step count for the bias correction of the whole table; decay
    as AdamW's (Loshchilov and Hutter), on those rows alone."""
    weights = [row[:] for row in table]
    m = [[0.0] * len(table[0]) for _ in table]
    v = [[0.0] * len(table[0]) for _ in table]
    for step, gradients in enumerate(batches, start=1):
        correction1, correction2 = 1 - betas[0] ** step, 1 - betas[1] ** step
        for row, grad in gradients.items():
            for j, g in enumerate(grad):
                weights[row][j] *= 1 - lr * decay
                m[row][j] = betas[0] * m[row][j] + (1 - betas[0]) * g
                v[row][j] = betas[1] * v[row][j] + (1 - betas[1]) * g * g
                denominator = math.sqrt(v[row][j] / correction2) + eps
                weights[row][j] -= lr * (m[row][j] / correction1) / denominator
    return weights


@pytest.mark.parametrize("decay", [0.0, 0.5])
def test_row_adam_matches_a_slow_reference_on_a_tiny_table(decay):
    torch.manual_seed(0)
    table = torch.randn(5, 3, dtype=torch.float64)
    batches = [
        {0: [0.5, -1.0, 2.0], 3: [0.1, 0.2, 0.3]},
        {3: [-0.4, 0.0, 1.0]},
        {1: [1.0, 1.0, 1.0], 0: [0.0, -0.5, 0.25]},
    ]
    param = torch.nn.Parameter(table.clone())
    optimizer = RowAdam([param], lr=0.1, weight_decay=decay)
    for gradients in batches:
        rows = torch.tensor(list(gradients))
        values = torch.tensor(list(gradients.values()), dtype=torch.float64)
        param.grad = torch.sparse_coo_tensor(rows[None, :], values, table.shape)
        optimizer.step()
    expected = reference_lazy_adam(table.tolist(), batches, 0.1, decay=decay)
    expected = torch.tensor(expected, dtype=torch.float64)
    torch.testing.assert_close(param.detach(), expected, rtol=0, atol=1e-12)
    assert torch.equal(param.detach()[[2, 4]], table[[2, 4]])  # never touched, never moved


def train(optimizer_class, steps=6):
    torch.manual_seed(0)
    table = torch.nn.Embedding(50, 8, sparse=True)
    optimizer = optimizer_class(list(table.parameters()), lr=0.01)
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        rows = torch.randint(0, 50, (32,), generator=generator)  # duplicates merge first
        loss = (table(rows) ** 2).sum() + table(rows[:5]).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return table.weight.detach(), optimizer


def test_row_adam_trains_as_sparse_adam_does():
    """The same rule; they differ only in where eps enters (after or before the bias
    correction of the second moment) and in float rounding."""
    expected, _ = train(torch.optim.SparseAdam)
    found, optimizer = train(RowAdam)
    torch.testing.assert_close(found, expected, rtol=0, atol=1e-5)
    untouched, _ = train(lambda params, lr: torch.optim.SGD(params, lr=0.0))
    assert (found - untouched).abs().max() > 1e-3  # and it did train
    state = optimizer.state_dict()  # saved with the training state, and restored from it
    restored = RowAdam([torch.nn.Parameter(torch.zeros(50, 8))], lr=0.01)
    restored.load_state_dict(state)
    assert restored.state_dict()["state"][0]["step"].item() == 6


@pytest.mark.parametrize("decay", [0.0, 0.5])
def test_row_adam_updates_a_dense_parameter_as_adamw_does(decay):
    """The history MLP's layers have dense gradients: every row steps, as in AdamW."""
    torch.manual_seed(0)
    start = torch.randn(4, 3, dtype=torch.float64)
    gradients = [torch.randn(4, 3, dtype=torch.float64) for _ in range(3)]
    params = [torch.nn.Parameter(start.clone()) for _ in range(2)]
    row_adam = RowAdam([params[0]], lr=0.1, weight_decay=decay)
    adamw = torch.optim.AdamW([params[1]], lr=0.1, weight_decay=decay)
    for gradient in gradients:
        for param, optimizer in zip(params, (row_adam, adamw), strict=True):
            param.grad = gradient.clone()
            optimizer.step()
    torch.testing.assert_close(params[0].detach(), params[1].detach(), rtol=0, atol=1e-12)
    assert (params[0].detach() - start).abs().min() > 1e-3  # every row moved


@pytest.mark.parametrize(
    "rows",
    [[1, 4, 7], [7, 1, 4], [4, 1, 4, 7, 1], [1, 1, 4], []],
    ids=["in order", "unordered", "repeated", "in order, repeated", "none"],
)
def test_a_gradients_rows_are_merged_unless_already_distinct_and_in_order(rows):
    values = torch.arange(len(rows) * 2, dtype=torch.float32).reshape(len(rows), 2)
    grad = torch.sparse_coo_tensor(torch.tensor([rows], dtype=torch.long), values, (9, 2))
    found_rows, found = distinct_rows(grad)
    expected = grad.coalesce()
    assert torch.equal(found_rows, expected.indices()[0])
    assert torch.equal(found, expected.values())
    taken_as_they_are = found.data_ptr() == grad._values().data_ptr()
    assert taken_as_they_are == (rows == sorted(set(rows)))
