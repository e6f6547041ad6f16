"""Subprocess entry of the onnxruntime adapter: copy a checked segment, or quantize it to int8 QDQ.

Run by the executor as `python -m edgesdk.toolchains.adapters._ort_tool ...` so that onnxruntime
work has the same timeout and error handling as every other converter.
"""

from __future__ import annotations

import argparse
import shutil
import sys


def _copy(model: str, out: str) -> None:
    import onnxruntime as ort

    ort.InferenceSession(model, providers=["CPUExecutionProvider"])  # refuses what the engine cannot run
    shutil.copyfile(model, out)


def _quantize(model: str, calib: str, out: str, per_channel: bool, extra_options: dict | None = None) -> None:
    """QDQ int8 with quantize_static, calibrated one sample at a time on the arrays of `calib` (.npz).

    Also used in-process by edgesdk.simulate (with the accelerator's extra_options).
    """
    import numpy as np
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    data = np.load(calib)
    names = [i.name for i in ort.InferenceSession(model, providers=["CPUExecutionProvider"]).get_inputs()]
    missing = [n for n in names if n not in data.files]
    if missing:
        raise ValueError(f"calibration data has no array for input(s) {missing}")
    count = len(data[names[0]])

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.i = 0

        def get_next(self):  # type: ignore[no-untyped-def]
            if self.i >= count:
                return None
            feed = {n: data[n][self.i:self.i + 1] for n in names}
            self.i += 1
            return feed

    quantize_static(model, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, extra_options=extra_options or {})
    ort.InferenceSession(out, providers=["CPUExecutionProvider"])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="edgesdk-ort-tool")
    ap.add_argument("action", choices=("copy", "quantize"))
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--calib")
    ap.add_argument("--per-channel", action="store_true")
    a = ap.parse_args(argv)
    if a.action == "copy":
        _copy(a.model, a.out)
    else:
        try:
            _quantize(a.model, a.calib, a.out, a.per_channel)
        except ValueError as exc:
            raise SystemExit(str(exc)) from exc


if __name__ == "__main__":
    main(sys.argv[1:])
