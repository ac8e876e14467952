"""The one way the report's figures are saved."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path


def save_figure(fig, path: str | os.PathLike, *, dpi: int = 150) -> None:
    """Save a figure as PNG without a timestamp/software tag (byte-stable) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, metadata={"Software": None})
    plt.close(fig)


def write_pages(pages: Sequence, folder: str | os.PathLike) -> None:
    """Write figures as ``page_01.png``, ``page_02.png``, ... into a fresh ``folder``."""
    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for i, fig in enumerate(pages, start=1):
        save_figure(fig, folder / f"page_{i:02d}.png")


def note_figure(text: str, *, title: str):
    """A figure that only says ``text`` (an analysis that could not be drawn)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 2.5))
    ax = fig.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=10)
    ax.set_title(title)
    return fig
