"""The pre-processing kernel: numpy reference semantics, the host-built native library bit-equal to it,
the ctypes loader and its explicit fallback."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgesdk.runtime import native
from edgesdk.runtime.native import (
    LetterboxNormalizer,
    NativeLibraryError,
    NativePreproc,
    letterbox_geometry,
    letterbox_normalize_numpy,
    load_native,
    pattern_image,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "cross" / "examples" / "preproc"
MEAN, STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)


def _need(*exes: str) -> None:
    missing = [e for e in exes if shutil.which(e) is None]
    if missing:
        reason = f"not installed: {', '.join(missing)} (bash scripts/setup.sh installs them)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def host_lib(tmp_path_factory) -> Path:
    """libedgesdk_preproc.so built for this host with the host compiler, from the same CMake project."""
    _need("cmake", "g++")
    b = tmp_path_factory.mktemp("host-build")
    for argv in (["cmake", "-S", str(EXAMPLE), "-B", str(b), "-DCMAKE_BUILD_TYPE=Release"],
                 ["cmake", "--build", str(b), "--parallel", "2"]):
        subprocess.run(argv, check=True, capture_output=True, timeout=300)
    return b / native.LIB_NAME


def test_runtime_module_imports_stdlib_and_numpy_only():
    tree = ast.parse((REPO / "edgesdk" / "runtime" / "native.py").read_text())
    mods = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    mods |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert mods - {"numpy", "__future__"} <= set(sys.stdlib_module_names), mods


def test_geometry_and_padding():
    assert letterbox_geometry(480, 640, 640, 640) == (1.0, 640, 480, 0, 80)
    s, nw, nh, pl, pt = letterbox_geometry(1080, 1920, 384, 640)
    assert (nw, nh, pl, pt) == (640, 360, 0, 12) and s == pytest.approx(1 / 3)
    img = np.full((10, 40, 3), 200, np.uint8)
    r = letterbox_normalize_numpy(img, (40, 40), mean=(100, 100, 100), std=(50, 50, 50), pad_value=0)
    assert r.tensor.shape == (3, 40, 40) and r.tensor.dtype == np.float32
    assert (r.pad, r.resized) == ((0, 15), (40, 10))
    assert np.all(r.tensor[:, :15] == -2.0) and np.all(r.tensor[:, 25:] == -2.0)  # (0 - 100) / 50
    assert np.all(r.tensor[:, 15:25] == 2.0)  # (200 - 100) / 50, constant image stays constant
    assert r.to_source(20, 20) == pytest.approx((20.0, 5.0))


def test_identity_resize_is_exact_and_channels_swap():
    img = pattern_image(17, 23)
    r = letterbox_normalize_numpy(img, (17, 23), mean=(0, 0, 0), std=(1, 1, 1))
    assert r.scale == 1.0 and np.array_equal(r.tensor, img.transpose(2, 0, 1).astype(np.float32))
    rgb = letterbox_normalize_numpy(img, (17, 23), bgr_to_rgb=True)
    assert np.array_equal(rgb.tensor, img[:, :, ::-1].transpose(2, 0, 1).astype(np.float32))
    gray = letterbox_normalize_numpy(img[:, :, 0], (34, 46), mean=(0,), std=(1,))
    assert gray.tensor.shape == (1, 34, 46)


def test_close_to_opencv_inter_linear():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    r = letterbox_normalize_numpy(img, (120, 120), mean=(0, 0, 0), std=(1, 1, 1))
    nw, nh = r.resized
    ref = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR).astype(np.float32).transpose(2, 0, 1)
    body = r.tensor[:, r.pad[1]: r.pad[1] + nh, r.pad[0]: r.pad[0] + nw]
    # cv2 works in 11-bit fixed point and rounds to uint8: half a grey level plus a little
    assert np.abs(body - ref).max() <= 1.0


def test_bad_inputs():
    with pytest.raises(TypeError):
        letterbox_normalize_numpy(np.zeros((4, 4, 3), np.float32), (4, 4))
    with pytest.raises(ValueError, match="HxWxC"):
        letterbox_normalize_numpy(np.zeros((4, 4, 5), np.uint8), (4, 4))
    with pytest.raises(ValueError, match="3 values"):
        letterbox_normalize_numpy(np.zeros((4, 4, 3), np.uint8), (4, 4), mean=(1, 2))
    with pytest.raises(ValueError, match="std"):
        letterbox_normalize_numpy(np.zeros((4, 4, 3), np.uint8), (4, 4), std=(1, 0, 1))


def test_native_equals_numpy_bit_for_bit(host_lib):
    lib = NativePreproc(host_lib)
    rng = np.random.default_rng(0)
    for trial in range(120):
        h, w = (int(v) for v in rng.integers(1, 260, 2))
        oh, ow = (int(v) for v in rng.integers(1, 330, 2))
        c = int(rng.integers(1, 5))
        img = rng.integers(0, 256, (h, w + 3, c), dtype=np.uint8)[:, 1: 1 + w]  # padded rows
        mean, std = rng.uniform(0, 200, c), rng.uniform(1, 80, c)
        a = letterbox_normalize_numpy(img, (oh, ow), mean, std, 114.0, bool(trial % 2))
        b = lib(img, (oh, ow), mean, std, 114.0, bool(trial % 2))
        assert (a.scale, a.pad, a.resized) == (b.scale, b.pad, b.resized)
        assert np.array_equal(a.tensor, b.tensor), (trial, float(np.abs(a.tensor - b.tensor).max()))
        assert b.backend == "native" and a.backend == "numpy"


def test_preproc_check_program_matches_numpy(host_lib, tmp_path):
    prog = host_lib.parent / "preproc_check"
    out = tmp_path / "o.f32"
    res = subprocess.run([str(prog), "--pattern", "480", "640", "--out-h", "320", "--out-w", "320", "--bgr",
                          "--out", str(out)], capture_output=True, text=True, timeout=60, check=True)
    assert '"pad": [0, 40]' in res.stdout
    ref = letterbox_normalize_numpy(pattern_image(480, 640), (320, 320), MEAN, STD, 114.0, True).tensor
    assert np.array_equal(np.fromfile(out, np.float32).reshape(ref.shape), ref)


def test_loader_search_env_and_fallback(host_lib, tmp_path, monkeypatch):
    monkeypatch.delenv(native.ENV_VAR, raising=False)
    monkeypatch.setattr(native, "STANDARD_DIRS", ())
    lib, st = load_native()
    assert lib is None and not st.available and "not found" in st.reason
    pre = LetterboxNormalizer()
    assert pre.backend == "numpy" and pre(pattern_image(8, 8), (4, 4)).backend == "numpy"
    # next to the bundle
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    shutil.copy(host_lib, bundle / native.LIB_NAME)
    lib, st = load_native([bundle])
    assert lib is not None and st.available and st.path == str(bundle / native.LIB_NAME)
    assert LetterboxNormalizer([bundle])(pattern_image(8, 8), (4, 4)).backend == "native"
    # explicitly named by the environment, but unusable: loud
    junk = tmp_path / "junk.so"
    junk.write_bytes(b"not a library")
    monkeypatch.setenv(native.ENV_VAR, str(junk))
    with pytest.raises(NativeLibraryError, match="cannot load"):
        load_native()


def test_library_of_another_arch_falls_back_with_the_reason(tmp_path, monkeypatch):
    _need("cmake", "aarch64-linux-gnu-g++")
    from edgesdk.boards import get_board
    from edgesdk.cross.build import cross_build

    res = cross_build(EXAMPLE, get_board("rpi4"), out_dir=tmp_path / "a64", sysroot="none")
    monkeypatch.delenv(native.ENV_VAR, raising=False)
    monkeypatch.setattr(native, "STANDARD_DIRS", ())
    lib, st = load_native([res.plan.out_dir])
    assert lib is None and not st.available and "cannot load" in st.reason
