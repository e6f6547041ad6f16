"""Real photos that scikit-image ships, split into a calibration set and an evaluation set (never one image in both).

    python scripts/photos.py --out photos/          # photos/calib/*.png and photos/eval/*.png
    python scripts/photos.py --out photos/ --json   # what was written, and from where

The images are files inside the scikit-image wheel (`skimage.data`'s own directory): nothing is downloaded.
Grey images are written as 3-channel PNGs, so every image model can take them. The split is fixed (a list, not
random), so a figure measured on `eval/` means the same images on every machine.

Used by the tests (tests/integration/test_int8_accuracy.py), docs/quantization.md and anyone who wants real
images for `edgesdk convert --calib` / `--sample` and `edgesdk verify --eval`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

#: Evaluation photos: people, animals, objects, vehicles, text (what the zoo's models look at).
EVAL = ("astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "rocket.jpg", "camera.png",
        "page.png", "text.png")
#: Calibration photos: every other photo of the wheel (disjoint from EVAL).
CALIB = ("motorcycle_right.png", "hubble_deep_field.jpg", "retina.jpg", "ihc.png", "coins.png", "moon.png",
         "brick.png", "grass.png", "gravel.png", "logo.png", "color.png", "clock_motion.png", "cell.png",
         "microaneurysms.png", "horse.png", "chessboard_RGB.png")


def data_dir() -> Path:
    import skimage.data

    return Path(skimage.data.__file__).parent


def write(out: Path) -> dict[str, list[str]]:
    """Write out/calib and out/eval; returns {split: [file names]}."""
    import numpy as np
    from PIL import Image

    assert not set(EVAL) & set(CALIB)
    src = data_dir()
    done: dict[str, list[str]] = {}
    for split, names in (("calib", CALIB), ("eval", EVAL)):
        d = out / split
        d.mkdir(parents=True, exist_ok=True)
        done[split] = []
        for name in names:
            p = src / name
            if not p.is_file():
                raise SystemExit(f"photos: {p} is not in this scikit-image ({src}); pip install 'scikit-image>=0.22'")
            with Image.open(p) as im:
                a = np.asarray(im.convert("RGB"))
            dst = d / (Path(name).stem + ".png")
            tmp = dst.with_suffix(".png.tmp")
            Image.fromarray(a).save(tmp, format="PNG")
            tmp.replace(dst)
            done[split].append(dst.name)
    return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder to write calib/ and eval/ into")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    done = write(a.out)
    if a.json:
        print(json.dumps({"source": str(data_dir()), **{k: v for k, v in done.items()}}))
    else:
        for k, v in done.items():
            print(f"{a.out / k}: {len(v)} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
