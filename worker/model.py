"""The trial's networks: MLPs that learn to predict a survivor's future quality from its features.

A trial trains one network per replicate, all with the trial's hidden layers, dropout, learning rate
and batch size, each on its own sample. They train side by side as one batched model (a layer's
weights for every replicate in one tensor, so a step is a few batched matrix products), which costs
about what one network costs; each keeps its own initial weights, batches, validation split, early
stopping and best weights, exactly as if it trained alone, and Adam's per-weight updates keep them
independent. Inputs and target are standardised on each network's training rows, the output is
linear (a sigmoid saturated the old network), training stops early on a fixed validation split and
keeps the best weights. Everything random is seeded from the trial, so a retry reproduces it exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional

MAX_EPOCHS = 25
PATIENCE = 5
VALIDATION_SHARE = 0.2
# Small matrices: one thread is as fast as several and keeps the slots of a rig from competing.
THREADS = 1


@dataclass
class Ensemble:
    """The trained networks, one per replicate, with the standardisation each learned on."""

    weights: list[tuple[torch.Tensor, torch.Tensor]]  # per layer: (replicates, in, out), (replicates, 1, out)
    mean: np.ndarray  # (replicates, features)
    scale: np.ndarray
    diagnostics: list[dict[str, Any]]  # per replicate: epochs, best_epoch, val_loss

    def predict(self, replicate: int, x: np.ndarray) -> np.ndarray:
        """Replicate's predictions (float64) for rows x."""
        xs = _tensor((x - self.mean[replicate]) / self.scale[replicate])[None]
        with torch.no_grad():
            out = _forward([(w[replicate:replicate + 1], b[replicate:replicate + 1]) for w, b in self.weights], xs,
                           dropout=0.0, training=False)
        return out[0, :, 0].double().numpy()


def _tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def _standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale over the rows; a constant column gets scale 1 (it carries nothing, and must not divide by 0)."""
    std = x.std(axis=0)
    return x.mean(axis=0), np.where(std > 1e-12, std, 1.0)


def _forward(layers: list[tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor, dropout: float,
             training: bool) -> torch.Tensor:
    for i, (w, b) in enumerate(layers):
        x = torch.baddbmm(b, x, w)
        if i < len(layers) - 1:
            x = functional.dropout(functional.relu(x), dropout, training)
    return x


def _init(widths: list[int], generators: list[torch.Generator]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each replicate's layers as torch.nn.Linear initialises them: U(-1/sqrt(in), 1/sqrt(in))."""
    layers = []
    for n_in, n_out in zip(widths, widths[1:], strict=False):
        bound = 1 / math.sqrt(n_in)
        w = torch.stack([torch.empty(n_in, n_out).uniform_(-bound, bound, generator=g) for g in generators])
        b = torch.stack([torch.empty(1, n_out).uniform_(-bound, bound, generator=g) for g in generators])
        layers.append((w.requires_grad_(), b.requires_grad_()))
    return layers


def fit(xs: list[np.ndarray], ys: list[np.ndarray], params: dict[str, Any], seeds: list[int]) -> Ensemble:
    """Train one network per replicate on xs[k] -> ys[k] (the same number of rows each), with the
    trial's hidden_layers, dropout, learning_rate and batch_size."""
    torch.set_num_threads(THREADS)
    replicates, n = len(xs), len(xs[0])
    orders = [np.random.default_rng(seed).permutation(n) for seed in seeds]
    n_val = max(1, int(n * VALIDATION_SHARE))
    val = np.stack([order[:n_val] for order in orders])
    train = np.stack([order[n_val:] for order in orders])
    stats = [_standardiser(x[t]) for x, t in zip(xs, train, strict=True)]
    y_stats = [_standardiser(y[t, None]) for y, t in zip(ys, train, strict=True)]
    mean, scale = np.stack([m for m, _ in stats]), np.stack([s for _, s in stats])
    x_all = _tensor(np.stack([(x - m) / s for x, (m, s) in zip(xs, stats, strict=True)]))
    y_all = _tensor(np.stack([(y[:, None] - m) / s for y, (m, s) in zip(ys, y_stats, strict=True)]))
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    widths = [xs[0].shape[1], *map(int, params["hidden_layers"].split("_")), 1]
    layers = _init(widths, generators)
    torch.manual_seed(seeds[0])  # the dropout masks
    optimiser = torch.optim.Adam([t for layer in layers for t in layer], lr=params["learning_rate"])
    rows = torch.arange(replicates)[:, None]
    best_loss, best_epoch = np.full(replicates, math.inf), np.zeros(replicates, dtype=int)
    best = [tuple(t.detach().clone() for t in layer) for layer in layers]
    active = np.ones(replicates, dtype=bool)  # still improving within its patience
    epochs = np.full(replicates, MAX_EPOCHS)
    for epoch in range(MAX_EPOCHS):
        perms = torch.stack([torch.from_numpy(t)[torch.randperm(len(t), generator=g)]
                             for t, g in zip(train, generators, strict=True)])
        for batch in perms.split(params["batch_size"], dim=1):
            optimiser.zero_grad()
            out = _forward(layers, x_all[rows, batch], params["dropout"], training=True)
            loss = ((out - y_all[rows, batch]) ** 2).mean(dim=(1, 2)).sum()
            loss.backward()
            optimiser.step()
        with torch.no_grad():
            index = torch.from_numpy(val)
            out = _forward(layers, x_all[rows, index], params["dropout"], training=False)
            val_loss = ((out - y_all[rows, index]) ** 2).mean(dim=(1, 2)).numpy()
        improved = active & np.isfinite(val_loss) & (val_loss < best_loss)
        for k in np.flatnonzero(improved):
            best_loss[k], best_epoch[k] = val_loss[k], epoch
            for (w, b), (bw, bb) in zip(layers, best, strict=True):
                bw[k], bb[k] = w.detach()[k], b.detach()[k]
        done = active & ~(np.isfinite(val_loss) & (epoch - best_epoch < PATIENCE))  # diverged, or out of patience
        epochs[done], active = epoch + 1, active & ~done
        if not active.any():
            break
    diagnostics = [{"epochs": int(epochs[k]), "best_epoch": int(best_epoch[k]) + 1,
                    "val_loss": float(best_loss[k]) if math.isfinite(best_loss[k]) else None}
                   for k in range(replicates)]
    return Ensemble(best, mean, scale, diagnostics)
