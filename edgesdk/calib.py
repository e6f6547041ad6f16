"""Calibration sets: a folder of images (jpg/png) or .npy/.npz tensors, read, checked and preprocessed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgesdk.errors import InputError
from edgesdk.runtime.manifest import Preprocess

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
TENSOR_SUFFIXES = (".npy", ".npz")
#: Below this many samples int8 scales are noisy; convert warns (RKNN and Vitis ask for 100-1000).
RECOMMENDED_MIN = 100
_MAX_NAMED = 10


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"


@dataclass(frozen=True)
class CalibrationSet:
    """The calibration samples, preprocessed: input name -> N x (input shape without its batch axis of 1).

    images: for a set of images, the same images after resize/letterbox (N x H x W x 3 uint8 BGR), for
    converters that read image files themselves (mnnquant).
    """

    source: Path
    kind: str  # "images" | "tensors"
    files: tuple[str, ...]
    arrays: dict[str, Any]
    images: Any | None
    warnings: tuple[str, ...]

    @property
    def count(self) -> int:
        return len(self.files)

    def sample(self, i: int) -> dict[str, Any]:
        """Sample i as a feed with the batch axis of 1."""
        return {n: a[i:i + 1] for n, a in self.arrays.items()}

    def summary(self) -> dict[str, Any]:
        return {"dir": str(self.source), "kind": self.kind, "count": self.count, "warnings": list(self.warnings)}


def _fail(what: str, bad: list[tuple[str, str]], d: Path, label: str = "calibration") -> InputError:
    lines = "\n".join(f"  - {name}: {why}" for name, why in bad[:_MAX_NAMED])
    more = f"\n  ... and {len(bad) - _MAX_NAMED} more" if len(bad) > _MAX_NAMED else ""
    return InputError(f"{label} set {d}: {len(bad)} {what}\n{lines}{more}")


def read_image(path: Path) -> Any:
    """An image file as an H x W x 3 uint8 BGR array (the way OpenCV reads it); ValueError when unreadable."""
    import numpy as np

    try:
        from PIL import Image, UnidentifiedImageError

        with Image.open(path) as im:
            im.load()
            rgb = np.asarray(im.convert("RGB"))
        return np.ascontiguousarray(rgb[..., ::-1])
    except ImportError:
        pass
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise ValueError(f"not a readable image ({type(exc).__name__}: {exc})") from exc
    try:
        import cv2
    except ImportError as exc:
        raise ValueError("no image decoder: pip install pillow (or opencv-python-headless)") from exc
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("not a readable image (OpenCV could not decode it)")
    return img


def load_calibration(directory: str | Path, inputs: Sequence[InputSpec], preprocess: Preprocess | None,
                     limit: int | None = None, what: str = "--calib") -> CalibrationSet:
    """Read every sample of `directory`; InputError naming each unreadable or misshaped file.

    what: the flag the folder came from (--calib, --sample, --data, --eval), named in the errors."""
    import numpy as np

    label = "calibration" if what == "--calib" else what.lstrip("-")
    d = Path(directory)
    if not d.exists():
        raise InputError(f"{label} dir {d} does not exist")
    if not d.is_dir():
        raise InputError(f"{what} {d}: expected a directory of images (jpg/png) or .npy tensors")
    files = sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith("."))
    imgs = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    tens = [p for p in files if p.suffix.lower() in TENSOR_SUFFIXES]
    if not imgs and not tens:
        others = f" (it has {len(files)} other file(s), e.g. {files[0].name})" if files else ""
        raise InputError(f"{label} dir {d} is empty: no .jpg/.png images or .npy/.npz tensors{others}")
    if imgs and tens:
        raise InputError(f"{label} dir {d} mixes images ({len(imgs)}) and tensors ({len(tens)}); use one kind")
    chosen = (imgs or tens)[: limit or None]
    warnings = []
    if len(files) > len(imgs) + len(tens):
        warnings.append(f"{len(files) - len(imgs) - len(tens)} file(s) in {d} are neither images nor tensors "
                        "and were skipped")
    if what == "--calib" and len(chosen) < RECOMMENDED_MIN:
        warnings.append(f"only {len(chosen)} calibration sample(s); int8 scales are more reliable with at least "
                        f"{RECOMMENDED_MIN}")
    by_name = {i.name: i for i in inputs}
    if imgs:
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise InputError(f"{label} images need a model with one 4-D image input; it has "
                             f"{[(i.name, list(i.shape)) for i in inputs]}; give .npz tensors instead")
        if preprocess is None:
            raise InputError("calibration images need the preprocessing: --preprocess FILE.yaml or the --mean/--std/"
                             "--color/--resize options")
        from edgesdk.runtime.preprocess import Preprocessor

        pre = Preprocessor(preprocess)
        bad, resized, tensors = [], [], []
        for p in chosen:
            try:
                img = read_image(p)
            except ValueError as exc:
                bad.append((p.name, str(exc)))
                continue
            lb, _geo = pre.letterbox(img)
            resized.append(lb)
            tensors.append(pre.normalize(lb))
        if bad:
            raise _fail("unreadable image file(s)", bad, d, label)
        inp = inputs[0]
        x = np.concatenate(tensors).astype(inp.dtype, copy=False)
        if tuple(x.shape[1:]) != tuple(inp.shape[1:]):
            raise InputError(f"the preprocessing makes {list(x.shape[1:])} tensors, input {inp.name!r} is "
                             f"{list(inp.shape)}: check size/layout")
        return CalibrationSet(d, "images", tuple(p.name for p in chosen), {inp.name: x}, np.stack(resized),
                              tuple(warnings))
    per: dict[str, list[Any]] = {i.name: [] for i in inputs}
    bad = []
    for p in chosen:
        try:
            if p.suffix.lower() == ".npy":
                if len(inputs) != 1:
                    raise ValueError(f"a .npy holds one tensor; the model has {len(inputs)} inputs: use .npz with "
                                     f"arrays named {list(by_name)}")
                arrs = {inputs[0].name: np.load(p, allow_pickle=False)}
            else:
                with np.load(p, allow_pickle=False) as z:
                    arrs = {k: z[k] for k in z.files}
                missing = [n for n in by_name if n not in arrs]
                if missing:
                    raise ValueError(f"no array for input(s) {missing} (it has {sorted(arrs)})")
            for n, a in arrs.items():
                if n not in by_name:
                    continue
                want = by_name[n].shape
                if tuple(a.shape) == tuple(want[1:]) and want[0] == 1:
                    a = a[None]
                if tuple(a.shape) != tuple(want):
                    raise ValueError(f"{n!r} has shape {list(a.shape)}, the model input is {list(want)}")
                if a.dtype.kind not in "fiub":
                    raise ValueError(f"{n!r} has dtype {a.dtype}, not numeric")
                per[n].append(a.astype(by_name[n].dtype))
        except (ValueError, OSError, EOFError) as exc:
            bad.append((p.name, str(exc) or type(exc).__name__))
    if bad:
        raise _fail("unreadable or misshaped tensor file(s)", bad, d, label)
    arrays = {n: np.concatenate(v) for n, v in per.items()}
    return CalibrationSet(d, "tensors", tuple(p.name for p in chosen), arrays, None, tuple(warnings))


__all__ = ["IMAGE_SUFFIXES", "RECOMMENDED_MIN", "CalibrationSet", "InputSpec", "load_calibration", "read_image"]
