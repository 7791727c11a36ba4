"""The scalper's classifier: a small PyTorch MLP over the bar features of
:mod:`domain.scalper.features`, its scaler, training with early stopping, and a safe save / load.

Classes (the triple-barrier labels of :mod:`domain.scalper.labels`): index 0 = short (-1),
1 = flat (0), 2 = long (+1). :meth:`ScalperModel.predict` returns the direction of the most probable
class and its probability as the confidence (seed 003, "ML Model Inference" and "Signal
Generator": /work/shared/seeds/003_42bd756451187795.txt).

Files (a folder): ``weights.pt`` (the network's ``state_dict``, loaded with
``torch.load(weights_only=True)``: tensors only, never a pickled object) and ``model.json`` (format
version, feature list, scaler mean and scale, label parameters, bar period, torch version, data
hashes, windows, metrics, hidden sizes). :func:`load_model` refuses a folder whose feature list,
format version or torch major.minor differs from this code's (:class:`ModelMismatch`): a model
trained on other features would read the wrong columns silently.

Inference runs with ``torch.inference_mode()`` on one thread (the strategy actor's), batch 1.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

FORMAT_VERSION = 1
CLASSES = (-1, 0, 1)
"""Class index -> direction: short, flat, long."""


class ModelMismatch(ValueError):
    """A saved model does not fit this code: other features, format version or torch version."""


def _torch() -> Any:
    import torch
    return torch


def _net(n_in: int, hidden: Sequence[int], dropout: float) -> Any:
    nn = _torch().nn
    layers: list[Any] = []
    width = n_in
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
        width = h
    layers.append(nn.Linear(width, len(CLASSES)))
    return nn.Sequential(*layers)


@dataclass
class Scaler:
    """Standardisation fitted on the training window only: ``(x - mean) / scale`` per column
    (scale 1 where a column is constant)."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> "Scaler":
        """Fit on ``x`` of shape (rows, features); raises ValueError on an empty or non-finite input."""
        if x.ndim != 2 or len(x) == 0 or not np.isfinite(x).all():
            raise ValueError("the scaler needs a non-empty 2-D array of finite numbers")
        std = x.std(axis=0)
        return cls(x.mean(axis=0), np.where(std > 0, std, 1.0))

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.scale


@dataclass
class ScalperModel:
    """A trained classifier with its scaler and metadata (module docstring)."""

    net: Any
    scaler: Scaler
    features: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict)
    identifier: str = ""

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities, shape (rows, 3), for raw features ``x`` of shape (rows, features)."""
        torch = _torch()
        with torch.inference_mode():
            t = torch.as_tensor(self.scaler.transform(np.atleast_2d(x)), dtype=torch.float32)
            return torch.softmax(self.net(t), dim=1).numpy().astype(np.float64)

    def predict(self, x: np.ndarray) -> tuple[int, float]:
        """``(direction -1 / 0 / +1, confidence 0..1)`` for one feature vector (shape (features,))."""
        p = self.probabilities(x)[0]
        k = int(p.argmax())
        return CLASSES[k], float(p[k])


def label_to_class(y: np.ndarray) -> np.ndarray:
    """Directions -1 / 0 / +1 -> class indices 0 / 1 / 2."""
    return (np.asarray(y, dtype=np.int64) + 1).astype(np.int64)


def train_model(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, *,
                features: Sequence[str], hidden: Sequence[int] = (32, 16), dropout: float = 0.1,
                lr: float = 1e-3, batch: int = 256, max_epochs: int = 200, patience: int = 10, seed: int = 7,
                progress: Callable[[int, float, float], None] | None = None) -> tuple[ScalperModel, dict[str, Any]]:
    """Train on CPU with Adam, class-weighted cross-entropy (inverse class frequency of the
    training labels), and early stopping on the validation loss (the best epoch's weights kept).

    Args:
        x_train, x_val: raw features, shape (rows, len(features)); the scaler is fitted on x_train.
        y_train, y_val: directions -1 / 0 / +1.
        seed: fixes torch's and numpy's generators (the same data and seed give the same weights).
        progress: ``f(epoch, train loss, val loss)`` after each epoch.
    Returns: ``(model, {"epochs", "best_epoch", "train_loss", "val_loss"})``.
    Raises ValueError on empty inputs or mismatched shapes.
    """
    torch = _torch()
    if len(x_train) == 0 or len(x_val) == 0 or x_train.shape[1] != len(features) or x_val.shape[1] != len(features):
        raise ValueError("train and validation sets must be non-empty with one column per feature")
    torch.manual_seed(seed)
    rng = np.random.RandomState(seed)
    scaler = Scaler.fit(x_train)
    xt = torch.as_tensor(scaler.transform(x_train), dtype=torch.float32)
    xv = torch.as_tensor(scaler.transform(x_val), dtype=torch.float32)
    yt = torch.as_tensor(label_to_class(y_train))
    yv = torch.as_tensor(label_to_class(y_val))
    counts = np.bincount(yt.numpy(), minlength=len(CLASSES)).astype(np.float64)
    weights = torch.as_tensor(np.where(counts > 0, len(yt) / (len(CLASSES) * np.maximum(counts, 1)), 0.0),
                              dtype=torch.float32)
    net = _net(len(features), hidden, dropout)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights)
    best = (math.inf, 0, None)
    epoch = 0
    history: list[tuple[float, float]] = []
    for epoch in range(1, max_epochs + 1):
        net.train()
        order = rng.permutation(len(xt))
        total = 0.0
        for i in range(0, len(order), batch):
            idx = torch.as_tensor(order[i:i + batch])
            opt.zero_grad()
            loss = loss_fn(net(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        net.eval()
        with torch.inference_mode():
            val = float(loss_fn(net(xv), yv))
        history.append((total / len(xt), val))
        if progress is not None:
            progress(epoch, total / len(xt), val)
        if val < best[0] - 1e-6:
            best = (val, epoch, {k: v.clone() for k, v in net.state_dict().items()})
        elif epoch - best[1] >= patience:
            break
    if best[2] is not None:
        net.load_state_dict(best[2])
    net.eval()
    model = ScalperModel(net, scaler, tuple(features),
                         {"hidden": list(hidden), "dropout": dropout, "seed": seed})
    return model, {"epochs": epoch, "best_epoch": best[1], "train_loss": history[best[1] - 1][0] if best[1] else None,
                   "val_loss": best[0]}


def save_model(model: ScalperModel, folder: Path) -> str:
    """Write ``weights.pt`` and ``model.json`` into ``folder`` (created); returns the identifier
    (sha256 of both files) that :func:`load_model` gives back."""
    torch = _torch()
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.net.state_dict(), folder / "weights.pt")
    meta = {**model.meta, "format_version": FORMAT_VERSION, "features": list(model.features),
            "scaler": {"mean": model.scaler.mean.tolist(), "scale": model.scaler.scale.tolist()},
            "torch": torch.__version__.split("+")[0], "classes": list(CLASSES)}
    (folder / "model.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return model_identifier(folder)


def model_identifier(folder: Path) -> str:
    """sha256 over ``model.json`` and ``weights.pt`` (what a hot reload compares)."""
    h = hashlib.sha256()
    for name in ("model.json", "weights.pt"):
        h.update((folder / name).read_bytes())
    return h.hexdigest()


def load_model(folder: Path, features: Sequence[str]) -> ScalperModel:
    """Load a saved model, checking it against this code.

    Raises:
        FileNotFoundError: a file is missing.
        ModelMismatch: other format version, feature list (names and order) or torch major.minor.
    """
    torch = _torch()
    meta = json.loads((folder / "model.json").read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelMismatch(f"{folder}: model format {meta.get('format_version')!r}, this code reads {FORMAT_VERSION}")
    if tuple(meta.get("features", ())) != tuple(features):
        raise ModelMismatch(f"{folder}: trained on features {meta.get('features')}, this code computes {list(features)}")
    mine, theirs = torch.__version__.split("+")[0].split(".")[:2], str(meta.get("torch", "")).split(".")[:2]
    if mine != theirs:
        raise ModelMismatch(f"{folder}: saved with torch {meta.get('torch')}, running {torch.__version__}")
    net = _net(len(features), meta["hidden"], meta.get("dropout", 0.0))
    net.load_state_dict(torch.load(folder / "weights.pt", weights_only=True))
    net.eval()
    scaler = Scaler(np.asarray(meta["scaler"]["mean"], dtype=np.float64),
                    np.asarray(meta["scaler"]["scale"], dtype=np.float64))
    return ScalperModel(net, scaler, tuple(features), meta, model_identifier(folder))
