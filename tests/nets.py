"""A tiny PyTorch network importable by path (``nets:MLP``) for state-dict packages."""

from __future__ import annotations

import torch


class MLP(torch.nn.Module):
    def __init__(self, n_features: int = 5, hidden: int = 16) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(n_features, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
