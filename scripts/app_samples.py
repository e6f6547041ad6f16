"""Real sample data for the two example applications (issue 18): text images for the OCR app, a short video for the
detection + tracking app, and the OCR recogniser's character list.

    python scripts/app_samples.py ocr --out samples/ocr/              # *.png + truth.json {file: [lines]}
    python scripts/app_samples.py charset --rec ch_PP-OCRv4_rec_infer.onnx --out keys.txt
    python scripts/app_samples.py track --out samples/track/ [--frames 12]   # frame_000.png ... + truth.json
    python scripts/app_samples.py ocr --out samples/ocr/ --json       # what was written, as JSON

Nothing is downloaded. The photos are files inside the scikit-image wheel (`skimage.data`'s own directory, as
scripts/photos.py); the rendered text uses the TrueType font Pillow itself ships (`ImageFont.load_default(size=)`,
Aileron Regular, Pillow >= 10.1). Everything is fixed (text, positions, seeds): the same bytes on every run.

ocr: `page.png` is scikit-image's photo of a printed page (7 lines of a tutorial); the rendered images hold 3-4
lines of English words and digits at different sizes and positions: dark on plain paper, dark on a photo texture
(brick), light on a dark photo texture (grass), and one with a line upside down (so the direction classifier
matters). truth.json lists each file's lines in reading order (top to bottom), an upside-down line as it reads
once turned upright. scikit-image's text.png (handwritten maths, photographed at a slant) is left out: it has no
line-level ground truth a printed-text recogniser could be held to.

track: scikit-image's rocket photo (640x427, whole) is the background; two faces cut from real photos move across
it in straight lines, crossing left-right and passing near each other mid-way (the astronaut's patch slides over
the top of the cameraman's, never over a face): id 1 the astronaut's (Eileen Collins, astronaut.png), left to
right, and id 2 the cameraman's (camera.png, pasted at 1.5x), right to left. The truth boxes are the faces' boxes
(what a face detector should find), not the pasted patches. The zoo detector that finds both on every frame:
yolov8n-nudenet (320x320 letterbox, score >= 0.3, class-agnostic NMS at IoU 0.45). It calls both faces
FACE_FEMALE (class 1) on most frames and FACE_MALE (12) on some, sometimes both on one face: treat classes 1 and
12 as one "face" class (or NMS class-agnostic), or a class-aware NMS leaves duplicate boxes.

charset: PP-OCRv4's rec ONNX models (rapidocr-onnxruntime) carry their character list in the model's metadata
(metadata_props key "character", one symbol per line); the output's classes are CTC blank + those symbols + " ".
keys.txt gets one symbol per line, UTF-8; read it back with `text.split("\\n")` (a symbol is U+3000, the
ideographic space: do not strip lines).

From Python (tests): `ocr_samples()`, `write_ocr(out)`, `track_samples(frames)`, `write_track(out, frames)`,
`charset(model)`, `write_charset(model, out)`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# -- inputs --------------------------------------------------------------------------------------------------------

#: scikit-image's photo of a printed page and its lines, in reading order (written as it is, 384x191). Its last
#: rows hold the top of a cut-off line (a web address), not part of the truth: PP-OCRv4's detector finds no box there.
PAGE_FILE = "page.png"
PAGE_LINES = ("Region-based segmentation",
              "Let us first determine markers of the coins and the",
              "background. These markers are pixels that we can label",
              "unambiguously as either object or background. Here,",
              "the markers are found at the two extreme parts of the",
              "histogram of grey values:",
              ">>> markers = np.zeros_like(coins)")


@dataclass(frozen=True)
class Line:
    """One rendered line: text, font size in pixels, top-left corner, and whether it is drawn upside down."""

    text: str
    size: int
    x: int
    y: int
    flipped: bool = False


@dataclass(frozen=True)
class Sheet:
    """One rendered image: name, size, background ("paper" or a photo texture), ink colour (RGB), lines."""

    name: str
    width: int
    height: int
    background: str
    ink: tuple[int, int, int]
    lines: tuple[Line, ...]


#: The rendered OCR images. Lines are listed top to bottom (the reading order truth.json gives).
SHEETS = (
    Sheet("paper.png", 640, 360, "paper", (24, 24, 32), (
        Line("Receipt 2024-0117", 44, 40, 36),
        Line("Total amount 348.50 EUR", 34, 110, 150),
        Line("Paid by card ending 4921", 30, 60, 260),
    )),
    Sheet("texture.png", 640, 400, "brick", (20, 16, 12), (
        Line("Road works ahead", 40, 150, 30),
        Line("Keep left for 200 m", 36, 60, 130),
        Line("Speed limit 50", 48, 200, 220),
        Line("Open again on May 31", 30, 90, 322),
    )),
    Sheet("dark.png", 640, 360, "grass", (236, 232, 200), (
        Line("Platform 7", 46, 200, 40),
        Line("Next train 18:45 to Leeds", 34, 60, 150),
        Line("Gate B12 is closed", 30, 240, 262),
    )),
    Sheet("flipped.png", 640, 400, "paper", (30, 30, 90), (
        Line("Edge boards run models", 38, 70, 40),
        Line("Batch of 64 frames at 30 fps", 34, 110, 140, flipped=True),
        Line("Version 1.4.4 is ready", 36, 150, 240),
        Line("Order 5 units by June 9", 28, 40, 326),
    )),
)
SEED = 18  #: the paper grain's seed (issue 18)
#: Space between words, in font sizes. Aileron's own space (0.23 em) is narrow enough that PP-OCRv4's recogniser
#: drops it when a line is read at its natural width (it keeps it when a long line is squeezed into 48x320).
WORD_GAP = 0.35


def data_dir() -> Path:
    """scikit-image's own photo folder (inside the wheel)."""
    import skimage.data

    return Path(skimage.data.__file__).parent


def photo(name: str) -> np.ndarray:
    """A scikit-image photo as (H, W, 3) uint8 RGB (grey ones repeated over three channels)."""
    from PIL import Image

    p = data_dir() / name
    if not p.is_file():
        raise SystemExit(f"app_samples: {p} is not in this scikit-image ({data_dir()}); "
                         "pip install 'scikit-image>=0.22'")
    with Image.open(p) as im:
        return np.asarray(im.convert("RGB")).copy()


# -- OCR -----------------------------------------------------------------------------------------------------------

def _background(kind: str, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """(h, w, 3) uint8 RGB: plain paper with a faint grain, or a real photo texture squeezed into a light (brick)
    or dark (grass) band so the ink keeps its contrast."""
    if kind == "paper":
        grain = rng.normal(0.0, 3.0, (h, w, 1)).astype(np.float32)
        base = np.array([238, 234, 224], np.float32)
        return np.clip(np.rint(base + grain), 0, 255).astype(np.uint8)
    from PIL import Image

    src = {"brick": "brick.png", "grass": "grass.png"}[kind]
    g0 = photo(src)[:, :, 0]
    k = max(w / g0.shape[1], h / g0.shape[0])  # scale to cover w x h, then crop the top-left corner
    size = (max(w, round(g0.shape[1] * k)), max(h, round(g0.shape[0] * k)))
    g = np.asarray(Image.fromarray(g0).resize(size, Image.Resampling.BICUBIC), np.float32)[:h, :w]
    g = (g - g.mean()) / (g.std() + 1e-6)
    if kind == "brick":  # light warm paper-like stone
        tone, spread, tint = 214.0, 14.0, np.array([1.0, 0.96, 0.88], np.float32)
    else:  # dark green-grey
        tone, spread, tint = 44.0, 12.0, np.array([0.85, 1.0, 0.85], np.float32)
    v = np.clip(tone + spread * g, 0, 255)[:, :, None] * tint
    return np.clip(np.rint(v), 0, 255).astype(np.uint8)


def render(sheet: Sheet, seed: int = SEED) -> np.ndarray:
    """The sheet's image, (H, W, 3) uint8 RGB. Each line is drawn on its own layer (alpha = the glyphs' coverage),
    turned by 180 degrees if flipped, and blended onto the background."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    img = _background(sheet.background, sheet.width, sheet.height, rng).astype(np.float32)
    ink = np.array(sheet.ink, np.float32)
    for ln in sheet.lines:
        font = ImageFont.load_default(size=ln.size)
        words = ln.text.split(" ")
        gap = round(WORD_GAP * ln.size)
        widths = [font.getlength(wd) for wd in words]
        layer = Image.new("L", (int(np.ceil(sum(widths))) + gap * (len(words) - 1) + 4,
                                font.getbbox(ln.text)[3] + 4), 0)
        draw, x = ImageDraw.Draw(layer), 2.0
        for wd, wl in zip(words, widths):
            draw.text((round(x), 2), wd, fill=255, font=font)
            x += wl + gap
        if ln.flipped:
            layer = layer.rotate(180)
        a = np.asarray(layer, np.float32)[:, :, None] / 255.0
        h, w = a.shape[:2]
        if ln.x + w > img.shape[1] or ln.y + h > img.shape[0]:
            raise ValueError(f"{sheet.name}: line {ln.text!r} does not fit ({w}x{h} at {ln.x},{ln.y})")
        region = img[ln.y:ln.y + h, ln.x:ln.x + w]
        img[ln.y:ln.y + h, ln.x:ln.x + w] = region * (1 - a) + ink * a
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def ocr_samples() -> dict[str, tuple[np.ndarray, list[str]]]:
    """{file name: (RGB image, truth lines in reading order)}: the page photo, then the rendered sheets."""
    out: dict[str, tuple[np.ndarray, list[str]]] = {PAGE_FILE: (photo(PAGE_FILE), list(PAGE_LINES))}
    for s in SHEETS:
        out[s.name] = (render(s), [ln.text for ln in s.lines])
    return out


def _save_png(a: np.ndarray, dst: Path) -> None:
    """Write an RGB array as PNG atomically (a temp file, then a rename)."""
    from PIL import Image

    tmp = dst.with_suffix(".png.tmp")
    Image.fromarray(a).save(tmp, format="PNG")
    tmp.replace(dst)


def _save_json(doc: Any, dst: Path) -> None:
    tmp = dst.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(dst)


def write_ocr(out: Path) -> dict[str, list[str]]:
    """Write out/*.png and out/truth.json; returns the truth {file: [lines]}."""
    out.mkdir(parents=True, exist_ok=True)
    truth: dict[str, list[str]] = {}
    for name, (img, lines) in ocr_samples().items():
        _save_png(img, out / name)
        truth[name] = lines
    _save_json(truth, out / "truth.json")
    return truth


# -- the recogniser's character list -------------------------------------------------------------------------------

class CharsetError(Exception):
    """The model carries no usable character list (printed as one message, exit status 1)."""


def charset(model: Path) -> tuple[list[str], int | None]:
    """(symbols, classes): the rec model's character list from its metadata_props key "character" (one symbol per
    line) and its output's class count when static (PP-OCR: blank + symbols + space = len(symbols) + 2)."""
    import onnx

    try:
        m = onnx.load(str(model), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - onnx raises several types for a bad file
        raise CharsetError(f"charset: cannot read {model} as ONNX: {exc}") from exc
    meta = {p.key: p.value for p in m.metadata_props}
    text = meta.get("character")
    if not text:
        keys = ", ".join(sorted(meta)) or "none"
        raise CharsetError(f"charset: {model} has no 'character' metadata (its metadata keys: {keys}); give the "
                           "recogniser's character list as a file instead (PaddleOCR's ppocr_keys_v1.txt)")
    symbols = text.split("\n")  # not splitlines(): a symbol may be any character but "\n"
    if symbols and symbols[-1] == "":
        symbols.pop()
    if not symbols or any(s == "" for s in symbols):
        raise CharsetError(f"charset: {model}'s 'character' metadata has empty lines: not one symbol per line")
    classes = None
    if m.graph.output:
        dims = m.graph.output[0].type.tensor_type.shape.dim
        if dims and dims[-1].HasField("dim_value"):
            classes = int(dims[-1].dim_value)
    return symbols, classes


def write_charset(model: Path, out: Path) -> dict[str, Any]:
    """Write the character list, one symbol per line (UTF-8, "\\n" endings); returns what was written."""
    symbols, classes = charset(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(symbols) + "\n")
    tmp.replace(out)
    return {"model": str(model), "out": str(out), "symbols": len(symbols), "classes": classes,
            "layout": "blank + symbols + space" if classes == len(symbols) + 2 else "unknown"}


# -- detection + tracking ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sprite:
    """An object cut from a photo: the patch (x1, y1, x2, y2 in the photo), the face's box in the photo (the truth
    box), the scale it is pasted at, and its straight path: the scaled patch's top-left corner on the first and on
    the last frame."""

    id: int
    source: str
    patch: tuple[int, int, int, int]
    face: tuple[int, int, int, int]
    scale: float
    start: tuple[int, int]
    end: tuple[int, int]


BACKGROUND = "rocket.jpg"  #: the background photo, whole (640x427): no face or other class of the detector in it
#: Face boxes as yolov8n-nudenet finds them on the whole photos (astronaut 0.81 FACE_FEMALE, camera 0.58 FACE_MALE),
#: fixed here. The patches keep hair and background around the faces (the detector needs that context: the
#: cameraman's face alone, at its own size, is not found). Painted in this order: the astronaut passes over the
#: top of the cameraman's patch (his hair), never over either face.
SPRITES = (
    Sprite(2, "camera.png", (140, 60, 300, 240), (182, 128, 267, 197), 1.5, start=(395, 157), end=(10, 150)),
    Sprite(1, "astronaut.png", (143, 43, 304, 220), (173, 83, 274, 180), 1.0, start=(10, 10), end=(470, 40)),
)
FEATHER = 10  #: pixels over which a patch's edge fades into the background


def _alpha(h: int, w: int, feather: int = FEATHER) -> np.ndarray:
    """(h, w, 1) float32: 1 inside, ramping to 0 over `feather` pixels at the edges (no hard seam to detect)."""
    ry = np.minimum(np.arange(h), np.arange(h)[::-1]).astype(np.float32)
    rx = np.minimum(np.arange(w), np.arange(w)[::-1]).astype(np.float32)
    a = np.minimum(np.minimum(ry[:, None], rx[None, :]) / feather, 1.0)
    return a[:, :, None]


def _path(s: Sprite, i: int, n: int) -> tuple[int, int]:
    """The patch's top-left corner on frame i of n: linear motion, rounded to whole pixels."""
    t = i / (n - 1)
    return (int(round(s.start[0] + t * (s.end[0] - s.start[0]))),
            int(round(s.start[1] + t * (s.end[1] - s.start[1]))))


def _cut(s: Sprite) -> tuple[np.ndarray, list[int]]:
    """(patch as float32 RGB, scaled at s.scale with PIL's bicubic filter; the face box relative to it, in whole
    pixels, so the truth box keeps its size from frame to frame)."""
    from PIL import Image

    x1, y1, x2, y2 = s.patch
    p = photo(s.source)[y1:y2, x1:x2]
    if s.scale != 1.0:
        size = (round((x2 - x1) * s.scale), round((y2 - y1) * s.scale))
        p = np.asarray(Image.fromarray(p).resize(size, Image.Resampling.BICUBIC))
    fx1, fy1, fx2, fy2 = s.face
    rel = [int(round(v * s.scale)) for v in (fx1 - x1, fy1 - y1, fx2 - x1, fy2 - y1)]
    return p.astype(np.float32), rel


def track_samples(frames: int = 12) -> list[tuple[np.ndarray, list[dict[str, Any]]]]:
    """[(RGB frame, [{id, box: [x1, y1, x2, y2]}] by id)] for `frames` frames (at least 2)."""
    if frames < 2:
        raise ValueError(f"track: --frames must be at least 2, got {frames}")
    bg = photo(BACKGROUND).astype(np.float32)
    fh, fw = bg.shape[:2]
    cut = [(s, *_cut(s)) for s in SPRITES]
    out = []
    for i in range(frames):
        img = bg.copy()
        objects = []
        for s, p, rel in cut:
            x, y = _path(s, i, frames)
            h, w = p.shape[:2]
            if x < 0 or y < 0 or x + w > fw or y + h > fh:
                raise ValueError(f"track: object {s.id} leaves the frame ({w}x{h} at {x},{y})")
            a = _alpha(h, w)
            img[y:y + h, x:x + w] = img[y:y + h, x:x + w] * (1 - a) + p * a
            box = [rel[0] + x, rel[1] + y, rel[2] + x, rel[3] + y]
            objects.append({"id": s.id, "box": box})
        objects.sort(key=lambda o: o["id"])
        out.append((np.clip(np.rint(img), 0, 255).astype(np.uint8), objects))
    return out


def write_track(out: Path, frames: int = 12) -> dict[str, Any]:
    """Write out/frame_000.png ... and out/truth.json {frames: [{file, objects: [{id, box}]}]}; returns the truth."""
    out.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"frames": []}
    for i, (img, objects) in enumerate(track_samples(frames)):
        name = f"frame_{i:03d}.png"
        _save_png(img, out / name)
        doc["frames"].append({"file": name, "objects": objects})
    _save_json(doc, out / "truth.json")
    return doc


# -- CLI -----------------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    o = sub.add_parser("ocr", help="text images + truth.json for the OCR app")
    o.add_argument("--out", type=Path, required=True)
    c = sub.add_parser("charset", help="the recogniser's character list from its ONNX metadata")
    c.add_argument("--rec", type=Path, required=True, help="the PP-OCR rec .onnx")
    c.add_argument("--out", type=Path, required=True, help="keys.txt to write")
    t = sub.add_parser("track", help="a synthetic video + truth.json for the detection + tracking app")
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--frames", type=int, default=12)
    for p in (o, c, t):
        p.add_argument("--json", action="store_true", help="print what was written as JSON")
    a = ap.parse_args(argv)
    if a.cmd == "ocr":
        truth = write_ocr(a.out)
        report: dict[str, Any] = {"out": str(a.out), "source": str(data_dir()), "files": truth}
        text = f"{a.out}: {len(truth)} images, {sum(map(len, truth.values()))} lines (truth.json)"
    elif a.cmd == "charset":
        try:
            report = write_charset(a.rec, a.out)
        except CharsetError as exc:
            print(exc, file=sys.stderr)
            return 1
        text = f"{a.out}: {report['symbols']} symbols (model classes: {report['classes']}, {report['layout']})"
    else:
        try:
            doc = write_track(a.out, a.frames)
        except ValueError as exc:
            print(exc, file=sys.stderr)
            return 2
        report = {"out": str(a.out), "frames": len(doc["frames"]), "background": BACKGROUND,
                  "objects": [{"id": s.id, "source": s.source} for s in sorted(SPRITES, key=lambda s: s.id)],
                  "detector": {"model": "yolov8n-nudenet", "input": [320, 320],
                               "classes": {"FACE_FEMALE": 1, "FACE_MALE": 12}, "score": 0.3, "iou": 0.45,
                               "nms": "class-agnostic"}}
        text = f"{a.out}: {len(doc['frames'])} frames, {len(SPRITES)} objects (truth.json)"
    print(json.dumps(report, ensure_ascii=False) if a.json else text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
