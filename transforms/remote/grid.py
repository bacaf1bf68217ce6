"""Several images in one grid image, so one face-detect call covers all of them.

Azure Face takes one image per call. Tiling `n x n` images into one grid image
and mapping the faces found back to their cells costs one call instead of `n^2`;
the price is resolution: each image is shrunk to fit its cell, so small faces can
be lost (measured in BENCHMARKS.md). Cells are separated by a gap, and a face
belongs to the cell holding its centre.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from PIL import Image

GAP_FRACTION = 0.04  # of a cell's side, between cells
BACKGROUND = (128, 128, 128)


@dataclasses.dataclass(frozen=True)
class Cell:
    """Where one image went in the grid: its corner, and grid pixels per image pixel."""

    left: int
    top: int
    width: int
    height: int
    scale: float

    def contains(self, x: float, y: float) -> bool:
        return self.left <= x < self.left + self.width and self.top <= y < self.top + self.height

    def to_image(self, x: float, y: float) -> tuple[float, float]:
        return (x - self.left) / self.scale, (y - self.top) / self.scale


def tile(images: list[Image.Image], columns: int, side: int) -> tuple[Image.Image, list[Cell]]:
    """Lays `images` out row by row, `columns` per row, in a `side`-pixel-wide grid.

    Each image is shrunk (never enlarged) to fit its cell, keeping its shape.
    """
    gap = max(2, round(side / columns * GAP_FRACTION))
    cell_side = (side - gap * (columns - 1)) // columns
    rows = -(-len(images) // columns)
    grid = Image.new("RGB", (side, rows * cell_side + gap * (rows - 1)), BACKGROUND)
    cells = []
    for index, image in enumerate(images):
        scale = min(1.0, cell_side / image.width, cell_side / image.height)
        width, height = max(1, round(image.width * scale)), max(1, round(image.height * scale))
        left = (index % columns) * (cell_side + gap)
        top = (index // columns) * (cell_side + gap)
        placed = image if scale == 1.0 else image.resize((width, height), Image.Resampling.LANCZOS)
        grid.paste(placed.convert("RGB"), (left, top))
        cells.append(Cell(left, top, width, height, scale))
    return grid, cells


def _moved(face: dict[str, Any], cell: Cell) -> dict[str, Any]:
    """An Azure Face answer for one face, from grid to image pixels."""
    rectangle = face["faceRectangle"]
    left, top = cell.to_image(rectangle["left"], rectangle["top"])
    moved = dict(face)
    moved["faceRectangle"] = {
        "left": left,
        "top": top,
        "width": rectangle["width"] / cell.scale,
        "height": rectangle["height"] / cell.scale,
    }
    if "faceLandmarks" in face:
        moved["faceLandmarks"] = {
            name: dict(zip(("x", "y"), cell.to_image(point["x"], point["y"]), strict=True))
            for name, point in face["faceLandmarks"].items()
        }
    return moved


def faces_by_cell(faces: list[dict[str, Any]], cells: list[Cell]) -> list[list[dict[str, Any]]]:
    """Azure Face's answer for a grid -> one answer per image, in that image's pixels.

    A face whose centre falls in a gap or an empty cell belongs to no image.
    """
    per_image: list[list[dict[str, Any]]] = [[] for _ in cells]
    for face in faces:
        rectangle = face["faceRectangle"]
        x = rectangle["left"] + rectangle["width"] / 2
        y = rectangle["top"] + rectangle["height"] / 2
        for index, cell in enumerate(cells):
            if cell.contains(x, y):
                per_image[index].append(_moved(face, cell))
                break
    return per_image
