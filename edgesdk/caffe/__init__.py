"""ONNX -> Caffe for the HiSilicon NNIE (nnie_mapper takes Caffe only), and its host check through OpenCV."""

from __future__ import annotations

from edgesdk.caffe.export import EXPORTABLE, CaffeExport, CaffeExportError, export_caffe, unsupported_nodes
from edgesdk.caffe.opencv_check import compare_with_onnxruntime, opencv_caffe_python, run_caffe

__all__ = ["EXPORTABLE", "CaffeExport", "CaffeExportError", "compare_with_onnxruntime", "export_caffe",
           "opencv_caffe_python", "run_caffe", "unsupported_nodes"]
