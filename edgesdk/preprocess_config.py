"""Pre-processing declared once (options or a small YAML file) -> the manifest's Preprocess, and applying it.

Applying it is edgesdk.runtime.preprocess.Preprocessor, the code the board runs: calibration and
`edgesdk verify` call it too, so the three agree by construction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from edgesdk.errors import InputError
from edgesdk.runtime.errors import BundleError
from edgesdk.runtime.manifest import Preprocess, _Reader

PREPROCESS_KEYS = tuple(f.name for f in fields(Preprocess))


def infer_input_layout(shape: Sequence[int]) -> tuple[str, tuple[int, int], int] | None:
    """(layout, (H, W), channels) of an image-like 4-D input, or None."""
    if len(shape) != 4:
        return None
    if shape[1] in (1, 3, 4) and shape[3] not in (1, 3, 4):
        return "NCHW", (int(shape[2]), int(shape[3])), int(shape[1])
    if shape[3] in (1, 3, 4) and shape[1] not in (1, 3, 4):
        return "NHWC", (int(shape[1]), int(shape[2])), int(shape[3])
    if shape[1] in (1, 3):
        return "NCHW", (int(shape[2]), int(shape[3])), int(shape[1])
    return None


def make_preprocess(input_name: str, input_shape: Sequence[int], yaml_path: str | Path | None = None,
                    options: Mapping[str, Any] | None = None) -> Preprocess:
    """The declared preprocessing: defaults from the model input, then the YAML file, then explicit options."""
    data: dict[str, Any] = {"input": input_name}
    guess = infer_input_layout(input_shape)
    if guess is not None:
        layout, size, _c = guess
        data.update(layout=layout, size=list(size))
    where = "preprocessing options"
    if yaml_path is not None:
        import yaml

        p = Path(yaml_path)
        where = str(p)
        try:
            raw = yaml.safe_load(p.read_text(encoding="utf-8"))
        except OSError as exc:
            raise InputError(f"{p}: cannot read: {exc.strerror or exc}") from exc
        except yaml.YAMLError as exc:
            raise InputError(f"{p}: not valid YAML: {exc}") from exc
        if not isinstance(raw, dict):
            raise InputError(f"{p}: expected a mapping of preprocessing fields ({', '.join(PREPROCESS_KEYS)})")
        data.update(raw)
    for k, v in (options or {}).items():
        if v is not None:
            data[k] = list(v) if isinstance(v, tuple) else v
    if guess is not None:  # the defaults (no normalisation) for the model's channel count: a grey model takes luma
        data.setdefault("mean", [0.0] * guess[2])
        data.setdefault("std", [1.0] * guess[2])
    if "size" not in data:
        raise InputError(f"{where}: field size: the model input {list(input_shape)} is not an image; give size: [H, W]")
    try:
        pre = Preprocess.parse(_Reader(data, where))
    except BundleError as exc:
        raise InputError(str(exc)) from exc
    if guess is not None:
        _layout, _size, c = guess
        if len(pre.mean) == 1 and c > 1:
            pre = replace(pre, mean=pre.mean * c)
        if len(pre.std) == 1 and c > 1:
            pre = replace(pre, std=pre.std * c)
        if len(pre.mean) != c or len(pre.std) != c:
            raise InputError(f"{where}: field mean/std: the input has {c} channel(s), got mean {list(pre.mean)} "
                             f"and std {list(pre.std)}")
    return pre


def with_defaults_note(pre: Preprocess) -> str:
    return (f"preprocessing: {pre.color}, resize {pre.resize} to {pre.size[0]}x{pre.size[1]}, x*{pre.scale:g}, "
            f"mean {list(pre.mean)}, std {list(pre.std)}, {pre.layout}, {pre.dtype}")


# -- application: the runtime's own code, so calibration, verify and the board agree ------------

def resize_image(img_bgr: Any, pre: Preprocess) -> Any:
    """Resize/letterbox: an H x W x 3 uint8 BGR image -> the model's size, still uint8 BGR."""
    from edgesdk.runtime.preprocess import Preprocessor

    return Preprocessor(pre).letterbox(img_bgr)[0]


def normalize(img_bgr: Any, pre: Preprocess) -> Any:
    """A resized uint8 BGR image -> the model input tensor with a batch axis of 1."""
    from edgesdk.runtime.preprocess import Preprocessor

    return Preprocessor(pre).normalize(img_bgr)


def apply_preprocess(img_bgr: Any, pre: Preprocess) -> Any:
    """The whole declared preprocessing of one BGR uint8 image (as OpenCV reads it)."""
    from edgesdk.runtime.preprocess import Preprocessor

    return Preprocessor(pre)(img_bgr)[0]


def mnn_mean_normal(pre: Preprocess, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The same normalisation as MNN's (pixel - mean) * normal, per channel in the model's colour order."""
    mean = list(pre.mean) * (channels if len(pre.mean) == 1 else 1)
    std = list(pre.std) * (channels if len(pre.std) == 1 else 1)
    return (tuple(m / pre.scale for m in mean), tuple(pre.scale / s for s in std))


__all__ = ["PREPROCESS_KEYS", "apply_preprocess", "infer_input_layout", "make_preprocess", "mnn_mean_normal",
           "normalize", "resize_image"]
