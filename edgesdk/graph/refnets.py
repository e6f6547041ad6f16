"""The reference networks of the boards' published latencies (`reference_latencies`), built in code, as ONNX.

The cost model (edgesdk.graph.cost) is calibrated against published whole-model latencies (scripts/
calibrate_cost.py). Latency does not depend on the weights, so the networks are torchvision's architectures with
random weights (torch.manual_seed(0)), plus MobileNet v1 (torchvision has none: the standard 13 depthwise-separable
blocks of Howard et al. 2017, width multiplier alpha), exported through edgesdk's own nn.Module path
(`edgesdk.frontends.to_onnx`, op set 13), i.e. what a user converting the same module gets. YOLOv8n is the zoo's
ultralytics export (scripts/zoo_fetch.py, `yolov8n-nudenet`: 18 classes instead of COCO's 80, which changes only the
classification head's last 1x1 convs), at the row's input size.

`network(row_model, row_input)` answers the ONNX path, or None for a row no network here stands for (SSD variants,
yolov5s, yolov4-tiny, movenet, nanodet, yolov3, efficientnet-lite0, ...): those rows are listed, not estimated.

Exports are cached under `edgesdk.paths.home()/refnets/`, keyed by name, input size and the torch / torchvision
versions, written to a temporary file and renamed into place.
"""

from __future__ import annotations

import os
import sys
import tempfile
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgesdk import paths

#: the reference_latencies `model` names -> (builder name, builder kwargs). Names absent here have no network.
ROW_MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "mobilenet_v2": ("mobilenet_v2", {}),
    "mobilenet": ("mobilenet_v1", {}),  # ncnn's benchmark name for MobileNet v1 1.0
    "mobilenet_v1": ("mobilenet_v1", {}),
    "mobilenet_v1_0.25": ("mobilenet_v1", {"alpha": 0.25}),
    # MLCommons Tiny visual wake words = MobileNet v1 alpha 0.25, 96x96x3, 2 classes
    "visual_wake_words": ("mobilenet_v1", {"alpha": 0.25, "classes": 2}),
    "squeezenet": ("squeezenet1_1", {}),  # ncnn's squeezenet and Vitis' cf_squeezenet (0.76 GOPs) are v1.1
    "resnet18": ("resnet18", {}),
    "resnet50": ("resnet50", {}),
    "resnet50_v1": ("resnet50", {}),
    "inception_v1": ("googlenet", {}),
    "yolov8n": ("yolov8n_zoo", {}),
}

#: rows without a network here, and why (the calibration table lists them)
NO_NETWORK_REASON = "no network in edgesdk.graph.refnets"


def _import_torchvision() -> Any:
    """Import torchvision's pure-Python model definitions without its C extension.

    torchvision 0.28.0's compiled ops (torchvision/_C) do not load beside the CPU torch 2.13.0 wheel this project
    pins: `import torchvision` fails in torchvision/_meta_registrations.py with "operator torchvision::nms does not
    exist", because that module registers meta kernels for ops the extension failed to define. The model
    definitions (torchvision.models.*) are plain nn.Modules that never call those ops, so the module is pre-filled
    with an empty one before the import. Only the reference networks use this; nothing else in edgesdk imports
    torchvision."""
    if "torchvision" in sys.modules:
        return sys.modules["torchvision"]
    key = "torchvision._meta_registrations"
    sys.modules.setdefault(key, types.ModuleType(key))
    import torchvision

    return torchvision


def torchvision_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("torchvision")
    except Exception:  # noqa: BLE001 - not installed
        return None


def available() -> bool:
    """True when torch and torchvision are installed (the networks can be built)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return torchvision_version() is not None


def _mobilenet_v1(alpha: float = 1.0, classes: int = 1000) -> Any:
    import torch.nn as nn

    def c(ch: int) -> int:
        return max(8, int(ch * alpha))

    def bn_relu(cin: int, cout: int, k: int, s: int, g: int) -> list[Any]:
        return [nn.Conv2d(cin, cout, k, s, k // 2, groups=g, bias=False), nn.BatchNorm2d(cout), nn.ReLU6(inplace=True)]

    cfg = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    layers = bn_relu(3, c(32), 3, 2, 1)
    cin = c(32)
    for cout, s in cfg:
        layers += bn_relu(cin, cin, 3, s, cin) + bn_relu(cin, c(cout), 1, 1, 1)
        cin = c(cout)
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes))


def _builders() -> dict[str, Callable[..., Any]]:
    tv = _import_torchvision()
    m = tv.models
    return {
        "mobilenet_v1": _mobilenet_v1,
        "mobilenet_v2": lambda: m.mobilenet_v2(weights=None),
        "squeezenet1_1": lambda: m.squeezenet1_1(weights=None),
        "resnet18": lambda: m.resnet18(weights=None),
        "resnet50": lambda: m.resnet50(weights=None),
        "googlenet": lambda: m.googlenet(weights=None, aux_logits=False, init_weights=False),
    }


def parse_input(text: str) -> tuple[int, int]:
    """'224x224' -> (224, 224)."""
    h, _, w = text.lower().partition("x")
    return int(h), int(w or h)


def cache_root() -> Path:
    return paths.home() / "refnets"


#: the zoo entry standing for the yolov8n rows, and its file (scripts/zoo_fetch.py fetches it)
ZOO_YOLOV8N = ("yolov8n-nudenet", "320n.onnx")


def _zoo_yolov8n() -> Path | None:
    """The zoo's cached YOLOv8n (scripts/zoo_fetch.py's cache: $EDGESDK_ZOO_CACHE, else ~/.cache/edgesdk/zoo)."""
    root = Path(os.environ.get("EDGESDK_ZOO_CACHE") or Path.home() / ".cache" / "edgesdk" / "zoo").expanduser()
    p = root / ZOO_YOLOV8N[0] / ZOO_YOLOV8N[1]
    return p if p.is_file() else None


def network(row_model: str, row_input: str) -> Path | None:
    """The ONNX of a reference row's network at the row's input size (built and cached on first use), or None
    when no network here stands for it (see ROW_MODELS). Needs torch + torchvision (see `available`)."""
    entry = ROW_MODELS.get(row_model)
    if entry is None:
        return None
    builder, kwargs = entry
    h, w = parse_input(row_input)
    if builder == "yolov8n_zoo":
        return _zoo_yolov8n()  # dynamic height/width: the caller fixes the shape (input_shape())
    import torch

    tag = "-".join(f"{k}{v}" for k, v in sorted(kwargs.items()))
    name = f"{builder}{'-' + tag if tag else ''}-{h}x{w}-torch{torch.__version__}-tv{torchvision_version()}.onnx"
    out = cache_root() / name.replace("+", "_")
    if out.is_file():
        return out
    from edgesdk.frontends import to_onnx

    torch.manual_seed(0)
    module = _builders()[builder](**kwargs).eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".refnet-", dir=out.parent) as td:
        src = to_onnx(module, Path(td), input_shapes={"x": (1, 3, h, w)}, opset=13)
        tmp = Path(td) / "final.onnx"
        Path(src.path).replace(tmp)
        os.replace(tmp, out)
    return out


def input_shape(path: Path, row_input: str) -> dict[str, tuple[int, ...]] | None:
    """Input shapes to open `path` with: the row's size for a model with dynamic height/width, else None."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    real = [i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    dims = real[0].type.tensor_type.shape.dim
    if all(d.HasField("dim_value") for d in dims):
        return None
    h, w = parse_input(row_input)
    ch = dims[1].dim_value if len(dims) > 1 and dims[1].HasField("dim_value") else 3
    return {real[0].name: (1, ch, h, w)}


__all__ = ["NO_NETWORK_REASON", "ROW_MODELS", "ZOO_YOLOV8N", "available", "cache_root", "input_shape", "network",
           "parse_input", "torchvision_version"]
