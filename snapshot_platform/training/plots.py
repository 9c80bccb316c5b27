"""Figures logged with a training run: a confusion matrix or a residual plot, and feature importances.

matplotlib runs headless (the Agg backend), inside Dagster workers and CLIs alike.
"""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def confusion_matrix_figure(y_true: Any, y_pred: Any, labels: list[Any], title: str) -> Any:
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = plt.subplots(figsize=(4.5, 4))
    ConfusionMatrixDisplay.from_predictions(y_true, y_pred, labels=labels, ax=ax, colorbar=False)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def residuals_figure(y_true: Any, y_pred: Any, title: str) -> Any:
    y_true = np.asarray(y_true, dtype=float)
    y_pred = np.asarray(y_pred, dtype=float)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter(y_pred, y_true - y_pred, s=6, alpha=0.5)
    ax.axhline(0, color="grey", linewidth=1)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual − predicted")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def importances_figure(importances: dict[str, float], method: str, title: str) -> Any:
    items = sorted(importances.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(5, 0.4 * len(items) + 1.2))
    ax.barh([k for k, _ in items], [v for _, v in items])
    ax.set_xlabel(method)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def close(fig: Any) -> None:
    plt.close(fig)
