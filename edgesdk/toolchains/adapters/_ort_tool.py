"""Subprocess entry of the onnxruntime adapter: copy a checked segment, or quantize it to int8 QDQ.

Run by the executor as `python -m edgesdk.toolchains.adapters._ort_tool ...` so that onnxruntime
work has the same timeout and error handling as every other converter.

    python -m edgesdk.toolchains.adapters._ort_tool quantize --model M.onnx --calib C.npz --out Q.onnx \
        --per-channel [--method minmax|entropy|percentile] [--exclude NODES.json]

`quantize` prints one JSON line: what was done (method, per-channel or not, nodes kept in float, opset upgrade).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

#: edgesdk's calibration method names -> onnxruntime.quantization.CalibrationMethod members.
METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
#: DequantizeLinear takes `axis` (per-channel weights) from this opset on; below it onnxruntime still writes it.
PER_CHANNEL_OPSET = 13
#: Histogram bins of the entropy (KL) calibration. onnxruntime's default for it is 128 bins for 128 quantized levels:
#: one candidate threshold, the min-max one (measured on YOLOv8n: every scale equal to min-max's), and
#: quantize_static does not pass a bin count on (1.32 forwards symmetric/moving-average/percentile options only).
ENTROPY_BINS = 512


def _copy(model: str, out: str) -> None:
    import onnxruntime as ort

    ort.InferenceSession(model, providers=["CPUExecutionProvider"])  # refuses what the engine cannot run
    shutil.copyfile(model, out)


def onnx_opset(proto: Any) -> int:
    """The default-domain opset of a model (1 when it imports none, as ONNX reads it)."""
    return next((int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)


def upgrade_opset(proto: Any, target: int = PER_CHANNEL_OPSET) -> Any:
    """`proto` converted to opset `target` by onnx's version converter (node names are kept); raises on failure."""
    from onnx import version_converter

    return version_converter.convert_version(proto, target)


@contextlib.contextmanager
def _entropy_bins(bins: int) -> Iterator[None]:
    """quantize_static's calibrator made with `bins` histogram bins (see ENTROPY_BINS), for the duration."""
    mod = sys.modules["onnxruntime.quantization.quantize"]  # the module: the package exports its function by name
    made = mod.create_calibrator

    def create(*args: Any, **kwargs: Any) -> Any:
        kwargs["extra_options"] = {"num_bins": bins, **(kwargs.get("extra_options") or {})}
        return made(*args, **kwargs)

    mod.create_calibrator = create
    try:
        yield
    finally:
        mod.create_calibrator = made


def _quantize(model: str, calib: str, out: str, per_channel: bool, extra_options: dict | None = None,
              method: str = "minmax", exclude: Sequence[str] = ()) -> dict[str, Any]:
    """QDQ int8 with quantize_static, calibrated one sample at a time on the arrays of `calib` (.npz).

    method: a key of METHODS (onnxruntime's CalibrationMethod); exclude: node names kept in float
    (quantize_static's nodes_to_exclude). Per-channel weights below opset 13 would need DequantizeLinear's `axis`,
    which those opsets lack: the model is upgraded to opset 13 first, or, when onnx's version converter cannot
    do that, its weights are quantized per tensor. Returns what was done (method, per_channel, excluded, opset
    note). Also used in-process by edgesdk.simulate (with the accelerator's extra_options) and edgesdk.quantize.
    """
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if method not in METHODS:
        raise ValueError(f"calibration method {method!r} is not one of {sorted(METHODS)}")
    data = np.load(calib)
    names = [i.name for i in ort.InferenceSession(model, providers=["CPUExecutionProvider"]).get_inputs()]
    missing = [n for n in names if n not in data.files]
    if missing:
        raise ValueError(f"calibration data has no array for input(s) {missing}")
    count = len(data[names[0]])
    proto = onnx.load(model)
    unknown = sorted(set(exclude) - {n.name for n in proto.graph.node})
    if unknown:
        raise ValueError(f"node(s) to keep in float {unknown[:10]} are not in {model}")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.i = 0

        def get_next(self):  # type: ignore[no-untyped-def]
            if self.i >= count:
                return None
            feed = {n: data[n][self.i:self.i + 1] for n in names}
            self.i += 1
            return feed

    opset = onnx_opset(proto)
    note = None
    with tempfile.TemporaryDirectory(prefix="edgesdk-ort-quant-") as tmp:
        src = model
        if per_channel and opset < PER_CHANNEL_OPSET:
            try:
                src = str(Path(tmp) / "upgraded.onnx")
                onnx.save_model(upgrade_opset(proto), src)
                ort.InferenceSession(src, providers=["CPUExecutionProvider"])
                note = f"opset {opset} upgraded to {PER_CHANNEL_OPSET} (per-channel DequantizeLinear needs axis)"
            except Exception as exc:  # noqa: BLE001 - the converter's and onnxruntime's own errors
                src, per_channel = model, False
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                note = (f"opset {opset}: onnx's version converter could not upgrade it to {PER_CHANNEL_OPSET} "
                        f"({first}); weights quantized per tensor")
        # the histogram calibrators print progress with print(): not on our stdout (convert --json's)
        with _entropy_bins(ENTROPY_BINS) if method == "entropy" else contextlib.nullcontext(), \
                contextlib.redirect_stdout(io.StringIO()):
            quantize_static(src, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            calibrate_method=getattr(CalibrationMethod, METHODS[method]),
                            nodes_to_exclude=list(exclude), extra_options=extra_options or {})
    ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    return {"method": method, "per_channel": per_channel, "excluded": list(exclude), "opset": note}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="edgesdk-ort-tool")
    ap.add_argument("action", choices=("copy", "quantize"))
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--calib")
    ap.add_argument("--per-channel", action="store_true")
    ap.add_argument("--method", choices=sorted(METHODS), default="minmax")
    ap.add_argument("--exclude", help="a JSON file: the list of node names to keep in float")
    a = ap.parse_args(argv)
    if a.action == "copy":
        _copy(a.model, a.out)
        return
    try:
        exclude = json.loads(Path(a.exclude).read_text()) if a.exclude else []
        if not isinstance(exclude, list) or not all(isinstance(x, str) for x in exclude):
            raise ValueError(f"{a.exclude} must hold a JSON list of node names")
        print(json.dumps(_quantize(a.model, a.calib, a.out, a.per_channel, method=a.method, exclude=exclude)))
    except (OSError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        raise SystemExit(str(exc)) from exc


if __name__ == "__main__":
    main(sys.argv[1:])
