"""Digits as tensors: the mlbook records of ``Datasets/digits`` read into memory.

The whole dataset is 1,797 images of 8x8 pixels, so each split is loaded once
(through ``run.dataset().torch(...)``: the records of a saved view when the
experiment names one) into two tensors (images ``N x 1 x 8 x 8`` in 0..1, labels
``N``) and batched with a plain ``DataLoader``.
:func:`to_batch` turns whatever a caller of an exported model sends (arrays,
nested lists, PIL images, PNG bytes, base64) into the same kind of tensor, so
training and deployment preprocess alike.
"""

from __future__ import annotations

import base64
import binascii
import io
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset


SIZE = 8  # images are SIZE x SIZE pixels


def load_split(run: Any, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N x 1 x 8 x 8, float 0..1) and labels (N, int64) of one split.

    Read through ``run.dataset().torch(split)`` (a torch ``Dataset`` over the
    mlbook records; only those of the saved view when the experiment names one,
    ``mlbook.Experiment(view=...)``): one channel, since the PNGs are grayscale;
    labels are the dataset's own class encoding (``dataset.json``): "0" -> 0 ... "9" -> 9.
    """
    return _tensors(run.dataset(), split)


@lru_cache(maxsize=8)
def _tensors(dataset: Any, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    return dataset.torch(split).tensors()


def loader(run: Any, split: str, batch_size: int, shuffle: bool = False) -> DataLoader:
    """A ``DataLoader`` over one split of the run's dataset (seeded shuffling)."""
    images, labels = load_split(run, split)
    generator = torch.Generator().manual_seed(int(run.params.get("seed", 0)))
    return DataLoader(
        TensorDataset(images, labels), batch_size=batch_size, shuffle=shuffle, generator=generator
    )


# The first image of scikit-learn's digits (a zero), pixel values 0..16.
_ZERO = [
    [0, 0, 5, 13, 9, 1, 0, 0],
    [0, 0, 13, 15, 10, 15, 5, 0],
    [0, 3, 15, 2, 0, 11, 8, 0],
    [0, 4, 12, 0, 0, 8, 8, 0],
    [0, 5, 8, 0, 0, 9, 8, 0],
    [0, 4, 11, 0, 1, 12, 7, 0],
    [0, 2, 14, 5, 10, 12, 0, 0],
    [0, 0, 6, 13, 10, 0, 0, 0],
]


def sample(params: Any = None) -> torch.Tensor:
    """One input for checking an export: a real "0" as a 1 x 1 x 8 x 8 tensor in 0..1.

    Needs no dataset, so a clean process can verify (and ONNX-trace) the export.
    """
    return torch.tensor(_ZERO, dtype=torch.float32).div(16.0).reshape(1, 1, SIZE, SIZE)


def _decode(item: Any) -> np.ndarray:
    """One image from bytes, base64 text, a PIL image or numbers, as floats 0..255."""
    from PIL import Image

    if isinstance(item, str):
        text = item.split(",", 1)[1] if item.startswith("data:") else item
        try:
            item = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("a string input must be a base64-encoded image") from exc
    if isinstance(item, bytes | bytearray):
        item = Image.open(io.BytesIO(item))
    if isinstance(item, Image.Image):
        image = item.convert("L")
        if image.size != (SIZE, SIZE):
            image = image.resize((SIZE, SIZE))
        return np.asarray(image, dtype=np.float32)
    return np.asarray(item, dtype=np.float32)


def to_batch(inputs: Any) -> torch.Tensor:
    """Inputs of a prediction as a float tensor N x 1 x 8 x 8 in 0..1.

    Accepts one image or a list of them; each image may be an 8x8 (or 64-long)
    array or nested list of pixel values 0..255 (like the PNG files; values all
    within 0..1 are taken as already scaled), a PIL image, PNG/JPEG bytes or
    base64 text. A dict is read from its ``inputs``, ``images`` or ``image`` key.
    """
    if isinstance(inputs, dict):
        for key in ("inputs", "images", "image", "instances"):
            if key in inputs:
                return to_batch(inputs[key])
        raise ValueError("expected the images under 'inputs', 'images' or 'image'")
    if isinstance(inputs, torch.Tensor):
        array = inputs.detach().cpu().numpy().astype(np.float32)
    elif isinstance(inputs, list | tuple) and inputs and not _is_number_list(inputs):
        array = np.stack([_decode(item).reshape(SIZE, SIZE) for item in inputs])
    else:
        array = _decode(inputs)
    if array.size % (SIZE * SIZE) != 0 or array.size == 0:
        raise ValueError(f"expected {SIZE}x{SIZE} images, got an array of shape {array.shape}")
    array = array.reshape(-1, 1, SIZE, SIZE)
    if array.max(initial=0.0) > 1.0:
        array = array / 255.0
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _is_number_list(value: Any) -> bool:
    """True for nested lists of numbers (one array), False for a list of images."""
    while isinstance(value, list | tuple) and value:
        value = value[0]
    return isinstance(value, int | float)
