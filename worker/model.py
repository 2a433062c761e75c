"""The trial's network: an MLP that learns to predict a seed's future quality from its features.

Inputs and target are standardised on the training rows, the output is linear (a sigmoid saturated
the old network), training stops early on a fixed validation split and keeps the best weights.
Everything random is seeded from the trial number, so a retry reproduces its trial exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

MAX_EPOCHS = 25
PATIENCE = 5
VALIDATION_SHARE = 0.2
# Small matrices: one thread is as fast as several and keeps the slots of a rig from competing.
THREADS = 1


@dataclass
class FittedModel:
    net: nn.Sequential
    mean: np.ndarray
    scale: np.ndarray
    diagnostics: dict[str, Any]

    def predict(self, x: np.ndarray) -> np.ndarray:
        self.net.eval()
        with torch.no_grad():
            return self.net(_tensor((x - self.mean) / self.scale)).squeeze(1).double().numpy()


def _tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def _weights(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.state_dict().items()}


def _standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale; a constant column gets scale 1 (it carries nothing, and must not divide by 0)."""
    std = x.std(axis=0)
    return x.mean(axis=0), np.where(std > 1e-12, std, 1.0)


def build(n_inputs: int, hidden_layers: str, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in map(int, hidden_layers.split("_")):
        layers += [nn.Linear(n_inputs, width), nn.ReLU(), nn.Dropout(dropout)]
        n_inputs = width
    return nn.Sequential(*layers, nn.Linear(n_inputs, 1))


def fit(x: np.ndarray, y: np.ndarray, params: dict[str, Any], seed: int) -> FittedModel:
    """Train on x -> y with the trial's hidden_layers, dropout, learning_rate and batch_size."""
    torch.set_num_threads(THREADS)
    torch.manual_seed(seed)
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = max(1, int(len(x) * VALIDATION_SHARE))
    val, train = order[:n_val], order[n_val:]
    mean, scale = _standardiser(x[train])
    y_mean, y_scale = _standardiser(y[train, None])
    xs, ys = _tensor((x - mean) / scale), _tensor((y[:, None] - y_mean) / y_scale)
    net = build(x.shape[1], params["hidden_layers"], params["dropout"])
    optimiser = torch.optim.Adam(net.parameters(), lr=params["learning_rate"])
    loss_fn = nn.MSELoss()
    best_loss, best_epoch, best_state = math.inf, 0, _weights(net)
    for epoch in range(MAX_EPOCHS):
        net.train()
        for batch in torch.from_numpy(train)[torch.randperm(len(train))].split(params["batch_size"]):
            optimiser.zero_grad()
            loss_fn(net(xs[batch]), ys[batch]).backward()
            optimiser.step()
        net.eval()
        with torch.no_grad():
            val_loss = loss_fn(net(xs[val]), ys[val]).item()
        if not math.isfinite(val_loss):
            break  # diverged: the best weights so far (at worst the initial ones) stand
        if val_loss < best_loss:
            best_loss, best_epoch, best_state = val_loss, epoch, _weights(net)
        elif epoch - best_epoch >= PATIENCE:
            break
    net.load_state_dict(best_state)
    return FittedModel(net, mean, scale, {"epochs": epoch + 1, "best_epoch": best_epoch + 1,
                                          "val_loss": best_loss if math.isfinite(best_loss) else None})
