"""Procedural "shapes" dataset in the ADE20K folder layout.

It is the built-in default data of the demo and of the end-to-end tests: no
download, deterministic for a seed, and learnable by a linear probe because
every class has its own colour family and texture.
"""
import os.path as osp
from pathlib import Path
from typing import Dict, Tuple

import cv2
import numpy as np

# Label files follow ADE20K: 0 is "unlabelled" (the dark outline drawn around
# every shape) and class i is stored as i + 1, so configs set
# reduce_zero_label=True.
SHAPES_CLASSES = ('sky', 'ground', 'disc', 'box', 'triangle')
SHAPES_PALETTE = [[70, 130, 180], [110, 190, 60], [220, 40, 40],
                  [240, 200, 40], [150, 60, 200]]
_OUTLINE = 2  # pixels


def _noise(rng: np.random.Generator, shape: Tuple[int, int],
           scale: float) -> np.ndarray:
    return rng.normal(0, scale, (*shape, 1))


def _paint(image: np.ndarray, mask: np.ndarray, colour: np.ndarray,
           texture: np.ndarray) -> None:
    image[mask] = np.clip(colour + texture[mask], 0, 255)


def render_sample(rng: np.random.Generator,
                  size: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """Draw one image (H, W, 3 uint8, BGR) and its label map (H, W uint8)."""
    height, width = size
    rows, cols = np.mgrid[0:height, 0:width]
    label = np.zeros((height, width), np.uint8)
    image = np.zeros((height, width, 3), np.float64)

    # A wavy horizon splits sky (smooth, blue) from ground (grainy, green).
    phase, amplitude = rng.uniform(0, 2 * np.pi), rng.uniform(4, 14)
    horizon = height * rng.uniform(0.3, 0.6) + amplitude * np.sin(
        cols / width * 2 * np.pi * rng.uniform(0.5, 2) + phase)
    sky = rows < horizon
    label[sky], label[~sky] = 1, 2
    jitter = rng.uniform(-20, 20, 3)
    sky_colour = np.array([180, 130, 70]) + jitter  # BGR
    _paint(image, sky, sky_colour, _noise(rng, size, 4) - rows[..., None] / 4)
    _paint(image, ~sky,
           np.array([60, 170, 100]) + jitter, _noise(rng, size, 18))

    for _ in range(rng.integers(2, 5)):
        cls = int(rng.integers(3, 6))
        radius = int(rng.integers(min(size) // 10, min(size) // 4))
        cy = int(rng.integers(radius, height - radius))
        cx = int(rng.integers(radius, width - radius))
        shape = np.zeros((height, width), np.uint8)
        if cls == 3:
            cv2.circle(shape, (cx, cy), radius, 1, -1)
        elif cls == 4:
            cv2.rectangle(shape, (cx - radius, cy - radius),
                          (cx + radius, cy + int(radius * 0.7)), 1, -1)
        else:
            points = np.array([[cx, cy - radius], [cx - radius, cy + radius],
                               [cx + radius, cy + radius]], np.int32)
            cv2.fillPoly(shape, [points], 1)
        inside = shape.astype(bool)
        outline = cv2.dilate(shape, np.ones(
            (2 * _OUTLINE + 1, ) * 2, np.uint8)).astype(bool) & ~inside
        colour = np.array(SHAPES_PALETTE[cls - 1][::-1], np.float64)
        if cls == 4:  # stripes
            texture = 40.0 * ((cols // 6) % 2)[..., None]
        elif cls == 5:  # checker
            texture = 35.0 * (((rows // 8) + (cols // 8)) % 2)[..., None]
        else:
            texture = _noise(rng, size, 8)
        _paint(image, inside, colour + rng.uniform(-15, 15, 3), texture)
        image[outline] = 25
        label[inside] = cls
        label[outline] = 0
    return image.round().astype(np.uint8), label


def generate_shapes_dataset(root: str,
                            num_train: int = 80,
                            num_val: int = 20,
                            size: Tuple[int, int] = (180, 250),
                            seed: int = 0) -> Dict[str, int]:
    """Write the dataset under ``root`` in the ADE20K layout.

    ``images/{training,validation}/NNNN.jpg`` and
    ``annotations/{training,validation}/NNNN.png``. Existing files of the
    same name are overwritten; the output is identical for the same
    arguments.

    Returns:
        dict: number of samples written per split.
    """
    rng = np.random.default_rng(seed)
    counts = {'training': num_train, 'validation': num_val}
    for split, count in counts.items():
        image_dir = Path(root, 'images', split)
        label_dir = Path(root, 'annotations', split)
        image_dir.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)
        for index in range(count):
            image, label = render_sample(rng, size)
            name = f'{split[0]}{index:04d}'
            cv2.imwrite(
                osp.join(image_dir, f'{name}.jpg'), image,
                [cv2.IMWRITE_JPEG_QUALITY, 95])
            cv2.imwrite(osp.join(label_dir, f'{name}.png'), label)
    return counts
