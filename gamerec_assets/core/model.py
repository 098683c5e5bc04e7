"""The two-tower retrieval model: a user tower and an item tower scored by dot product.

Both towers are ID embeddings over contiguous indices (see `features`). Item vectors are what
FAISS serves; a user's score for every game is one matrix product.
"""

import torch
from torch import nn


class TwoTower(nn.Module):
    def __init__(self, n_users: int, n_items: int, embed_dim: int) -> None:
        super().__init__()
        self.n_users, self.n_items, self.embed_dim = n_users, n_items, embed_dim
        self.user_embedding = nn.Embedding(n_users, embed_dim)
        self.item_embedding = nn.Embedding(n_items, embed_dim)
        nn.init.normal_(self.user_embedding.weight, std=0.02)
        nn.init.normal_(self.item_embedding.weight, std=0.02)

    def model_args(self) -> dict[str, int]:
        """The constructor arguments, stored in the checkpoint so it describes itself."""
        return {"n_users": self.n_users, "n_items": self.n_items, "embed_dim": self.embed_dim}

    def forward(self, user_idx: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        """In-batch logits [B, B]: row b scores user b against every positive item in the batch."""
        return self.user_embedding(user_idx) @ self.item_embedding(item_idx).T

    def user_vectors(self) -> torch.Tensor:
        return self.user_embedding.weight.detach()

    def item_vectors(self) -> torch.Tensor:
        return self.item_embedding.weight.detach()
