"""The behaviour-cloning network: an MLP from a (normalised) state to a tanh-squashed action."""

from __future__ import annotations

import torch
from torch import nn


class MLPPolicy(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden_dim: int = 256, num_layers: int = 2,
                 dropout: float = 0.1):
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        layers, width = [], obs_dim
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden_dim), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden_dim
        layers += [nn.Linear(width, act_dim), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """(..., obs_dim) -> (..., act_dim)"""
        return self.net(states)
