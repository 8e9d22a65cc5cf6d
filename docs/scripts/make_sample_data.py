"""Make the bundled sample data once: two DSB2018 tiles (CC0) with simulated stroke labels.

Run from the repository root with the shared data beside the checkout:
    python docs/scripts/make_sample_data.py [--data ../shared/data/dsb2018]
The output is committed; re-running it with the same seed reproduces it byte for byte.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from napari_deepseg.data.strokes import simulate_strokes

SEED = 2018
TILES = {  # chosen from the `train` split: many well separated nuclei, typical staining
    "fluorescence": ("fluo_256x256", "8f6e49e474eb"),
    "he": ("histo_256x320", "ad473063dab4"),
}
OUT = Path(__file__).resolve().parents[2] / "src" / "napari_deepseg" / "sample_data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    default_data = Path(__file__).resolve().parents[3] / "shared/data/dsb2018"
    parser.add_argument("--data", type=Path, default=default_data)
    args = parser.parse_args()
    rng = np.random.default_rng(SEED)
    for name, (folder, prefix) in TILES.items():
        (image_path,) = sorted((args.data / folder / "images").glob(f"{prefix}*.png"))
        image = iio.imread(image_path)
        if image.ndim == 3:
            image = image[..., :3]  # drop alpha
        mask = iio.imread(args.data / folder / "masks" / image_path.name) > 0
        strokes = simulate_strokes(mask, rng=rng, pixel_fraction=0.012)
        iio.imwrite(OUT / f"{name}_image.png", image)
        iio.imwrite(OUT / f"{name}_strokes.png", strokes)
        iio.imwrite(OUT / f"{name}_mask.png", mask.astype(np.uint8))
        counts = np.bincount(strokes.ravel(), minlength=3)
        print(
            f"{name}: {image_path.name} {image.shape}, strokes {counts[1]} background + "
            f"{counts[2]} nucleus pixels ({(counts[1] + counts[2]) / strokes.size:.2%})"
        )


if __name__ == "__main__":
    main()
