"""Classic baselines the project computes itself, so a model's numbers can be judged.

- Popularity: every user gets the games with the most training interactions.
- EASE (Steck, "Embarrassingly Shallow Autoencoders", WWW 2019): a linear item-item model
  with a closed form, B = I - P diagMat(1 / diag(P)) with P = (X^T X + lambda I)^-1, zero
  diagonal. Strong on sparse implicit data, but it needs a dense n_items x n_items matrix, so
  it is skipped above `EASE_MAX_ITEMS` games.
- ALS (Hu, Koren, Volinsky, "Collaborative Filtering for Implicit Feedback Datasets", ICDM
  2008): matrix factorisation of the binary user-game matrix, fitted by the `implicit`
  library.
All score through `metrics.evaluate_scorer` with the same masking and tie rule as the model.
"""

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse
import torch
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from gamerec_assets.core.metrics import TrainItems

EASE_MAX_ITEMS = 30_000  # float32 Gram matrix and its inverse, in place: ~2 x 4n^2 = 7.2 GB


@dataclass(frozen=True)
class EaseModel:
    item_weights: torch.Tensor  # B, [n_items, n_items], zero diagonal
    train_items: TrainItems

    def scores(self, users: np.ndarray) -> torch.Tensor:
        """Scores of every game for `users`: their training rows of X times B."""
        rows, items = self.train_items.pairs_for(users)
        n_items = self.item_weights.shape[0]
        indicator = torch.zeros(len(users), n_items, dtype=self.item_weights.dtype)
        indicator[torch.from_numpy(rows), torch.from_numpy(items)] = 1.0
        return indicator @ self.item_weights


def popularity_scores(train_item_idx: np.ndarray, n_items: int) -> torch.Tensor:
    """Training interactions per game, the popularity baseline's score."""
    return torch.from_numpy(np.bincount(train_item_idx, minlength=n_items).astype(np.float32))


def fit_ease(train_items: TrainItems, n_items: int, l2: float) -> EaseModel:
    """Closed-form EASE on the binary user-item matrix of the training split."""
    if n_items > EASE_MAX_ITEMS:
        raise ValueError(
            f"EASE needs a dense {n_items} x {n_items} matrix; skipped above {EASE_MAX_ITEMS} games"
        )
    n_users = len(train_items.indptr) - 1
    rows = np.repeat(np.arange(n_users), np.diff(train_items.indptr))
    with warnings.catch_warnings():  # torch flags its sparse kernels as beta
        warnings.simplefilter("ignore", UserWarning)
        x = torch.sparse_coo_tensor(
            torch.from_numpy(np.vstack([rows, train_items.indices])),
            torch.ones(len(rows), dtype=torch.float32),
            (n_users, n_items),
            check_invariants=False,
        ).coalesce()
        gram = torch.sparse.mm(x.t(), x).to_dense()
    gram.diagonal().add_(l2)
    weights = torch.linalg.inv(gram)  # the precision matrix P
    del gram
    weights.div_(-weights.diagonal().clone()[None, :])  # B = -P / diag(P), column-wise
    weights.diagonal().zero_()
    return EaseModel(item_weights=weights, train_items=train_items)


@dataclass(frozen=True)
class AlsModel:
    user_factors: torch.Tensor
    item_factors: torch.Tensor

    def scores(self, users: np.ndarray) -> torch.Tensor:
        return self.user_factors[torch.from_numpy(np.asarray(users))] @ self.item_factors.T


def fit_als(
    train_items: TrainItems,
    n_items: int,
    factors: int,
    regularization: float,
    alpha: float = 1.0,
    iterations: int = 15,
    seed: int = 0,
) -> AlsModel:
    """Implicit ALS on the binary user-game matrix (confidence 1 + alpha for an owned game)."""
    n_users = len(train_items.indptr) - 1
    matrix = scipy.sparse.csr_matrix(
        (
            np.ones(len(train_items.indices), dtype=np.float32),
            train_items.indices,
            train_items.indptr,
        ),
        shape=(n_users, n_items),
    )
    # implicit runs its own threads; a BLAS pool inside each of them would oversubscribe
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=factors,
            regularization=regularization,
            alpha=alpha,
            iterations=iterations,
            random_state=seed,
        )
        model.fit(matrix, show_progress=False)
    return AlsModel(torch.from_numpy(model.user_factors), torch.from_numpy(model.item_factors))
