"""The optimizers: AdamW on the rows a batch touched (sparse gradients), AdamW otherwise.

`RowAdam` is lazy AdamW, as torch's `SparseAdam` (a row's moments and weights change only when
a batch touches it; one step count per table for the bias correction), built from row
gathers and torch's fused Adam kernel: each step reads the touched rows of the weights and
both moments (`index_select`), updates them in one fused pass (`torch.optim.adam.adam`,
`fused=True`), and writes them back (`index_copy_`). SparseAdam builds three sparse tensors
and merges them into dense ones every step, about twenty passes over the touched rows where
this takes seven; on this project's CPUs those passes are memory-bound, and the optimizer
was most of a training step (see `benchmarks/optimizers.py`). It takes the gradients DDP
all-reduced (duplicate rows are merged first), so one process and N train alike. A dense
parameter (the history MLP's layers) touches every row, so it gets the same fused Adam step
over the whole tensor, without gathering: one optimizer for the whole model.

Weight decay is decoupled (AdamW's) and, being lazy, applies to the rows a batch touched: a
game decays each time it is trained, so frequent games are regularised more often than rare
ones (frequency-aware L2, as in Zhang et al. 2018 and large-scale embedding training).
"""

from collections.abc import Iterable

import torch
from torch.optim.adam import adam


def distinct_rows(grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A sparse gradient's rows and their gradients, one per row. The model looks each
    distinct game up once (`TwoTower.encode_items`, `pool_history`), so at the default
    settings in one process the rows come sorted and distinct and are taken as they are;
    merging them anyway (`coalesce`, a sort) costs about 3 ms at 12,000 rows. Otherwise they
    are merged: DDP concatenates the processes' shares, uniform negatives look games up a
    second time, and the user-ID table is looked up once per pair."""
    if not grad.is_coalesced():
        rows = grad._indices()[0]
        if len(rows) < 2 or bool((rows[1:] > rows[:-1]).all()):
            return rows, grad._values()
        grad = grad.coalesce()
    return grad.indices()[0], grad.values()


class RowAdam(torch.optim.Optimizer):
    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None) -> None:  # noqa: ANN001 - the Optimizer signature
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self._state_of(param)
                if not param.grad.is_sparse:
                    self._adam(
                        param, param.grad, state["exp_avg"], state["exp_avg_sq"], state, group
                    )
                    continue
                rows, grads = distinct_rows(param.grad)
                weights = param.index_select(0, rows)
                exp_avg = state["exp_avg"].index_select(0, rows)
                exp_avg_sq = state["exp_avg_sq"].index_select(0, rows)
                self._adam(weights, grads, exp_avg, exp_avg_sq, state, group)
                param.index_copy_(0, rows, weights)
                state["exp_avg"].index_copy_(0, rows, exp_avg)
                state["exp_avg_sq"].index_copy_(0, rows, exp_avg_sq)

    def _state_of(self, param: torch.Tensor) -> dict:
        state = self.state[param]
        if not state:
            state["step"] = torch.tensor(0.0)
            state["exp_avg"] = torch.zeros_like(param)
            state["exp_avg_sq"] = torch.zeros_like(param)
        return state

    @staticmethod
    def _adam(
        weights: torch.Tensor,
        grads: torch.Tensor,
        exp_avg: torch.Tensor,
        exp_avg_sq: torch.Tensor,
        state: dict,
        group: dict,
    ) -> None:
        """torch's fused AdamW step on these tensors, in place."""
        beta1, beta2 = group["betas"]
        adam(
            [weights],
            [grads.contiguous()],
            [exp_avg],
            [exp_avg_sq],
            [],
            [state["step"]],
            fused=True,
            decoupled_weight_decay=True,
            amsgrad=False,
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=group.get("weight_decay", 0.0),
            eps=group["eps"],
            maximize=False,
        )
