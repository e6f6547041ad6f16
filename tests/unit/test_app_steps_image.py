"""App steps letterbox, resize, crop, perspective_crop and orient (edgesdk/runtime/app/steps/image.py): geometry
against edgesdk.runtime.preprocess.letterbox_geometry, meta round trips, colour order and layout, crops against
plain slicing, the perspective crop against a synthetic rotated rectangle and cv2.warpPerspective."""

from __future__ import annotations

import numpy as np
import pytest

from edgesdk.runtime.app.steps import AppError, builtin
from edgesdk.runtime.app.steps.image import Crop, Letterbox, Orient, PerspectiveCrop, Resize, homography, warp_quad
from edgesdk.runtime.preprocess import letterbox_geometry, resize_numpy

cv2 = pytest.importorskip("cv2")

W = "app.yaml: stages.s.params"


def _img(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _smooth(h: int, w: int) -> np.ndarray:
    """A smooth BGR image (bilinear sampling of it is accurate)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    b = 128 + 100 * np.sin(x / 9.0) * np.cos(y / 13.0)
    g = 128 + 100 * np.cos((x + 2 * y) / 17.0)
    r = 255 * (x + y) / (w + h)
    return np.clip(np.rint(np.stack([b, g, r], axis=2)), 0, 255).astype(np.uint8)


# -- registry and params ---------------------------------------------------------------------------
def test_registry_and_contract() -> None:
    assert builtin("letterbox") is Letterbox and builtin("resize") is Resize and builtin("crop") is Crop
    assert builtin("perspective_crop") is PerspectiveCrop and builtin("orient") is Orient
    assert issubclass(Resize, Letterbox)
    assert Letterbox.inputs == ("image",) and Letterbox.outputs == ("tensor", "meta")
    assert Crop.inputs == ("image", "boxes") and Crop.outputs == ("crops",)
    assert PerspectiveCrop.inputs == ("image", "quads") and PerspectiveCrop.outputs == ("crops",)
    assert Orient.inputs == ("image", "probs") and Orient.outputs == ("image", "angle")
    assert not any(c.stateful or c.file_params for c in (Letterbox, Resize, Crop, PerspectiveCrop, Orient))


@pytest.mark.parametrize("cls, params, field", [
    (Letterbox, {}, "size"),
    (Letterbox, {"size": [0, 640]}, "size"),
    (Letterbox, {"size": [640]}, "size"),
    (Letterbox, {"size": "640x640"}, "size"),
    (Letterbox, {"size": [640.0, 640]}, "size"),
    (Letterbox, {"size": [64, 64], "align": "middle"}, "align"),
    (Letterbox, {"size": [64, 64], "color": "HSV"}, "color"),
    (Letterbox, {"size": [64, 64], "layout": "CHW"}, "layout"),
    (Letterbox, {"size": [64, 64], "keep_ratio": "yes"}, "keep_ratio"),
    (Letterbox, {"size": [64, 64], "pad_value": 300}, "pad_value"),
    (Letterbox, {"size": [64, 64], "mean": [0.5, 0.5]}, "mean"),
    (Letterbox, {"size": [64, 64], "mean": "zero"}, "mean"),
    (Letterbox, {"size": [64, 64], "color": "GREY", "mean": [0.5, 0.5, 0.5]}, "mean"),
    (Letterbox, {"size": [64, 64], "std": [1, 0, 1]}, "std"),
    (Letterbox, {"size": [64, 64], "scale": "1/255"}, "scale"),
    (Letterbox, {"size": [64, 64], "sizes": [1, 2]}, "sizes"),
    (Resize, {"size": [64, 64], "keep_ratio": False}, "keep_ratio"),
    (Resize, {"size": [64, 64], "pad_value": 0}, "pad_value"),
    (Crop, {"pad": -0.1}, "pad"),
    (Crop, {"min_size": 0}, "min_size"),
    (Crop, {"padding": 0.1}, "padding"),
    (PerspectiveCrop, {"rotate_ratio": -1}, "rotate_ratio"),
    (Orient, {"labels": []}, "labels"),
    (Orient, {"labels": [0, 0]}, "labels"),
    (Orient, {"labels": [0, "180"]}, "labels"),
    (Orient, {"thresh": 1.5}, "thresh"),
    (Orient, {"softmax": "maybe"}, "softmax"),
])
def test_bad_params_name_the_field(cls: type, params: dict, field: str) -> None:
    with pytest.raises(AppError, match=rf"stages\.s\.params\.{field}:"):
        cls(params, W)


def test_unknown_param_lists_the_known_ones() -> None:
    with pytest.raises(AppError, match=r"params\.keepratio: unknown parameter \(known: align, color, fit, keep_ratio"):
        Letterbox({"size": [8, 8], "keepratio": True}, W)


def test_fit_height_is_paddleocrs_text_line_resize() -> None:
    lb = Letterbox({"size": [48, 320], "fit": "height", "align": "topleft", "pad_value": 127.5, "color": "BGR",
                    "mean": [0.5], "std": [0.5]}, W)
    short = lb(image=np.full((20, 50, 3), 200, np.uint8))  # ratio 2.5: width ceil(48 * 2.5) = 120, the rest padded
    assert short["meta"].tolist()[:4] == pytest.approx([120 / 50, 48 / 20, 0, 0])
    assert np.allclose(short["tensor"][0, :, :, 120:], 0.0)  # 127.5 normalises to 0
    long = lb(image=np.full((10, 500, 3), 200, np.uint8))  # ratio 50: squeezed into the full 320 x 48
    assert long["meta"].tolist()[:4] == pytest.approx([320 / 500, 48 / 10, 0, 0])
    assert not np.isclose(long["tensor"][0, :, :, -1], 0.0).any()
    with pytest.raises(AppError, match=r"params\.fit: "):
        Letterbox({"size": [48, 320], "fit": "height", "keep_ratio": False}, W)
    with pytest.raises(AppError, match=r"params\.fit: expected one of"):
        Letterbox({"size": [48, 320], "fit": "width"}, W)


def test_bad_inputs_name_the_step() -> None:
    w = "app.yaml: stages.s"
    lb = Letterbox({"size": [32, 32]}, w)
    for bad in (np.zeros((8, 8, 3), np.float32), np.zeros((8, 8, 4), np.uint8), np.zeros((8,), np.uint8),
                np.zeros((0, 8, 3), np.uint8), np.array("image"), np.array([[["a"]]])):
        with pytest.raises(AppError, match="stages.s: input 'image'"):
            lb(image=bad)
    with pytest.raises(AppError, match="map: true"):
        lb(image=[_img(8, 8)])
    with pytest.raises(AppError, match="stages.s: input 'boxes' has shape"):
        Crop({}, w)(image=_img(8, 8), boxes=np.zeros((2, 5)))
    with pytest.raises(AppError, match="stages.s: input 'boxes' has non-finite"):
        Crop({}, w)(image=_img(8, 8), boxes=np.array([[0, 0, np.nan, 4]]))
    with pytest.raises(AppError, match="stages.s: input 'boxes' has dtype"):
        Crop({}, w)(image=_img(8, 8), boxes=np.array([["a", "b", "c", "d"]]))
    with pytest.raises(AppError, match="stages.s: input 'quads' has shape"):
        PerspectiveCrop({}, w)(image=_img(8, 8), quads=np.zeros((2, 3, 2)))
    with pytest.raises(AppError, match=r"stages.s: input 'probs' has shape \(3,\); expected \(1, 2\)"):
        Orient({}, w)(image=_img(8, 8), probs=np.array([0.2, 0.3, 0.5]))
    with pytest.raises(AppError, match="stages.s: input 'probs' has non-finite"):
        Orient({}, w)(image=_img(8, 8), probs=np.array([np.inf, 0.0]))


# -- letterbox / resize ------------------------------------------------------------------------------
@pytest.mark.parametrize("hw, size", [((480, 640), (640, 640)), ((300, 451), (640, 640)), ((700, 200), (320, 480)),
                                      ((64, 64), (64, 64)), ((10, 15), (96, 128))])
def test_letterbox_geometry_and_content(hw: tuple[int, int], size: tuple[int, int]) -> None:
    h, w = hw
    img = _img(h, w, seed=h)
    out = Letterbox({"size": list(size)}, W)(image=img)
    t, meta = out["tensor"], out["meta"]
    assert t.dtype == np.float32 and t.shape == (1, 3, *size) and t.flags.c_contiguous
    s, nw, nh, px, py = letterbox_geometry(h, w, *size)
    assert meta.dtype == np.float32 and meta.shape == (6,)
    np.testing.assert_allclose(meta, [nw / w, nh / h, px, py, h, w], rtol=1e-6)
    assert abs(meta[0] - s) < 1.0 / w and abs(meta[1] - s) < 1.0 / h
    # the image area: resize_numpy of the image, RGB, / 255
    want = resize_numpy(img, nw, nh)[:, :, ::-1].astype(np.float32) / np.float32(255)
    np.testing.assert_allclose(t[0].transpose(1, 2, 0)[py:py + nh, px:px + nw], want, atol=1e-6)
    # the pad area: 114 / 255
    pad = np.ones(size, dtype=bool)
    pad[py:py + nh, px:px + nw] = False
    if pad.any():
        np.testing.assert_allclose(t[0][:, pad], 114 / 255, atol=1e-6)


def test_meta_round_trip() -> None:
    """A bright block in the source lands at net = src * scale + pad, and maps back to its source position."""
    img = np.zeros((360, 500, 3), np.uint8)
    img[100:140, 300:360] = 255  # centre (330, 120)
    for step in (Letterbox({"size": [320, 320]}, W), Letterbox({"size": [320, 320], "align": "topleft"}, W),
                 Resize({"size": [256, 384]}, W)):
        out = step(image=img)
        sx, sy, px, py, sh, sw = out["meta"].tolist()
        assert (sh, sw) == (360, 500)
        plane = out["tensor"][0, 0]
        ys, xs = np.nonzero(plane > 0.9)
        cx, cy = xs.mean() + 0.5, ys.mean() + 0.5  # the centre in continuous network coordinates
        assert abs(330 * sx + px - cx) < 1.0 and abs(120 * sy + py - cy) < 1.0
        assert abs((cx - px) / sx - 330) < 1.5 and abs((cy - py) / sy - 120) < 1.5


def test_layouts_colours_and_normalisation() -> None:
    img = _img(50, 70, seed=3)
    base = {"size": [48, 64]}
    nchw = Letterbox(base, W)(image=img)["tensor"]
    nhwc = Letterbox({**base, "layout": "NHWC"}, W)(image=img)["tensor"]
    assert nhwc.shape == (1, 48, 64, 3) and nhwc.flags.c_contiguous
    np.testing.assert_array_equal(nhwc[0], nchw[0].transpose(1, 2, 0))
    bgr = Letterbox({**base, "color": "BGR"}, W)(image=img)["tensor"]
    np.testing.assert_array_equal(bgr[0, ::-1], nchw[0])
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    norm = Letterbox({**base, "mean": mean, "std": std}, W)(image=img)["tensor"]
    np.testing.assert_allclose(norm[0], (nchw[0] - np.array(mean)[:, None, None]) / np.array(std)[:, None, None],
                               atol=1e-5)
    raw = Letterbox({**base, "scale": 1, "mean": 127.5, "std": [127.5]}, W)(image=img)["tensor"]
    np.testing.assert_allclose(raw, nchw * 255 / 127.5 - 1, atol=1e-5)
    # GREY: 0.299 R + 0.587 G + 0.114 B of the resized image, in float; one channel
    grey = Letterbox({**base, "color": "GREY"}, W)(image=img)
    assert grey["tensor"].shape == (1, 1, 48, 64)
    _, nw, nh, px, py = letterbox_geometry(50, 70, 48, 64)
    small = resize_numpy(img, nw, nh).astype(np.float64)
    want = (0.299 * small[:, :, 2] + 0.587 * small[:, :, 1] + 0.114 * small[:, :, 0]) / 255
    np.testing.assert_allclose(grey["tensor"][0, 0, py:py + nh, px:px + nw], want, atol=1e-5)
    assert Letterbox({**base, "color": "GREY", "layout": "NHWC"}, W)(image=img)["tensor"].shape == (1, 48, 64, 1)


def test_grey_images() -> None:
    g = _img(40, 30, seed=4)[:, :, 0]
    for img in (g, g[:, :, None]):
        rgb = Letterbox({"size": [40, 40]}, W)(image=img)["tensor"]
        assert rgb.shape == (1, 3, 40, 40)
        np.testing.assert_array_equal(rgb[0, 0], rgb[0, 1])
        np.testing.assert_array_equal(rgb[0, 0], rgb[0, 2])
        grey = Letterbox({"size": [40, 40], "color": "GREY"}, W)(image=img)["tensor"]
        np.testing.assert_allclose(grey[0, 0, :, 5:35], g / 255, atol=1e-6)


def test_pad_value_and_align() -> None:
    img = np.full((20, 40, 3), 200, np.uint8)
    out = Letterbox({"size": [40, 40], "pad_value": 0, "mean": 0.5, "std": 0.5}, W)(image=img)
    t = out["tensor"][0]
    assert out["meta"].tolist() == [1.0, 1.0, 0.0, 10.0, 20.0, 40.0]
    np.testing.assert_allclose(t[:, :10], -1.0)  # what a 0 pixel normalises to
    np.testing.assert_allclose(t[:, 30:], -1.0)
    np.testing.assert_allclose(t[:, 10:30], (200 / 255 - 0.5) / 0.5, atol=1e-6)
    frac = Letterbox({"size": [40, 40], "pad_value": 127.5, "scale": 1}, W)(image=img)["tensor"][0]
    np.testing.assert_allclose(frac[:, :10], 127.5)
    top = Letterbox({"size": [40, 40], "align": "topleft"}, W)(image=img)
    assert top["meta"].tolist() == [1.0, 1.0, 0.0, 0.0, 20.0, 40.0]
    np.testing.assert_allclose(top["tensor"][0, :, :20], 200 / 255, atol=1e-6)
    np.testing.assert_allclose(top["tensor"][0, :, 20:], 114 / 255, atol=1e-6)


def test_resize_stretches_and_equals_letterbox_without_ratio() -> None:
    img = _img(100, 300, seed=5)
    out = Resize({"size": [64, 128]}, W)(image=img)
    sx, sy, px, py, h, w = out["meta"].tolist()
    assert (px, py, h, w) == (0, 0, 100, 300) and out["tensor"].shape == (1, 3, 64, 128)
    assert sx == pytest.approx(128 / 300) and sy == pytest.approx(0.64) and sx != sy
    lb = Letterbox({"size": [64, 128], "keep_ratio": False}, W)(image=img)
    np.testing.assert_array_equal(lb["tensor"], out["tensor"])
    np.testing.assert_array_equal(lb["meta"], out["meta"])
    want = resize_numpy(img, 128, 64)[:, :, ::-1].transpose(2, 0, 1) / np.float32(255)
    np.testing.assert_allclose(out["tensor"][0], want, atol=1e-6)


# -- crop ----------------------------------------------------------------------------------------
def test_crop_slices_clips_and_keeps_one_crop_per_box() -> None:
    img = _img(60, 80, seed=6)
    boxes = np.array([[10, 5, 30, 25],        # plain
                      [10.4, 5.6, 29.2, 24.1],  # rounded outwards: 10..30, 5..25
                      [-10, -5, 15, 12],      # clipped at the top left
                      [70, 50, 95, 70],       # clipped at the bottom right
                      [100, 100, 120, 120],   # outside: a min_size crop inside the image
                      [40, 30, 40, 30]], np.float32)  # empty
    crops = Crop({}, W)(image=img, boxes=boxes)["crops"]
    assert isinstance(crops, list) and len(crops) == len(boxes)
    assert all(c.dtype == np.uint8 and c.flags.c_contiguous for c in crops)
    np.testing.assert_array_equal(crops[0], img[5:25, 10:30])
    np.testing.assert_array_equal(crops[1], img[5:25, 10:30])
    np.testing.assert_array_equal(crops[2], img[0:12, 0:15])
    np.testing.assert_array_equal(crops[3], img[50:60, 70:80])
    np.testing.assert_array_equal(crops[4], img[59:60, 79:80])
    np.testing.assert_array_equal(crops[5], img[29:30, 39:40])
    big = Crop({"min_size": 8}, W)(image=img, boxes=boxes)["crops"]
    assert [c.shape[:2] for c in big] == [(20, 20), (20, 20), (12, 15), (10, 10), (8, 8), (8, 8)]
    np.testing.assert_array_equal(big[4], img[52:60, 72:80])
    np.testing.assert_array_equal(big[5], img[26:34, 36:44])
    crops[0][:] = 0  # a copy, not a view of the image
    assert img[5:25, 10:30].any()


def test_crop_pad_grey_and_empty() -> None:
    img = _img(60, 80, seed=7)
    padded = Crop({"pad": 0.1}, W)(image=img, boxes=np.array([[20, 20, 40, 30]]))["crops"]
    np.testing.assert_array_equal(padded[0], img[19:31, 18:42])
    g = img[:, :, 1]
    grey = Crop({}, W)(image=g, boxes=np.array([[20, 20, 40, 30]]))["crops"]
    assert grey[0].shape == (10, 20)
    np.testing.assert_array_equal(grey[0], g[20:30, 20:40])
    assert Crop({}, W)(image=img, boxes=np.zeros((0, 4)))["crops"] == []
    assert Crop({}, W)(image=img, boxes=np.zeros(0))["crops"] == []


# -- perspective crop ------------------------------------------------------------------------------
def test_perspective_crop_axis_aligned_equals_crop() -> None:
    img = _img(80, 120, seed=8)
    quads = np.array([[[10, 20], [70, 20], [70, 50], [10, 50]], [[0, 0], [120, 0], [120, 80], [0, 80]]], np.float32)
    crops = PerspectiveCrop({}, W)(image=img, quads=quads)["crops"]
    assert len(crops) == 2 and crops[0].shape == (30, 60, 3) and crops[0].dtype == np.uint8
    assert np.abs(crops[0].astype(int) - img[20:50, 10:70]).max() <= 1
    assert np.abs(crops[1].astype(int) - img).max() <= 1
    flat = PerspectiveCrop({}, W)(image=img, quads=quads.reshape(2, 8))["crops"]  # (N, 8) is accepted
    np.testing.assert_array_equal(flat[0], crops[0])
    g = img[:, :, 0]
    grey = PerspectiveCrop({}, W)(image=g, quads=quads[:1])["crops"][0]
    assert grey.shape == (30, 60) and np.abs(grey.astype(int) - g[20:50, 10:70]).max() <= 1
    assert PerspectiveCrop({}, W)(image=img, quads=np.zeros((0, 4, 2)))["crops"] == []


def _content(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """A smooth BGR pattern over the rectangle's own coordinates u (along), v (across), in pixels."""
    b = 128 + 90 * np.sin(u / 7.0)
    g = 128 + 90 * np.cos(v / 5.0)
    r = 60 + 150 * u / 130.0
    return np.stack([b, g, r], axis=-1)


def test_perspective_crop_recovers_a_rotated_rectangle() -> None:
    bw, bh, ang = 130.4, 36.3, np.deg2rad(-23.0)  # a text line going up to the right
    c = np.array([160.0, 120.0])
    u_ax = np.array([np.cos(ang), np.sin(ang)])
    v_ax = np.array([-np.sin(ang), np.cos(ang)])
    # draw it: every pixel centre's coordinates in the rectangle's frame
    y, x = np.mgrid[0:240, 0:320].astype(np.float64)
    rel = np.stack([x + 0.5 - c[0], y + 0.5 - c[1]], axis=-1)
    u = rel @ u_ax + bw / 2
    v = rel @ v_ax + bh / 2
    img = np.clip(np.rint(_content(u, v)), 0, 255).astype(np.uint8)
    inside = (u >= 0) & (u <= bw) & (v >= 0) & (v <= bh)
    img[~inside] = 0
    corners = np.array([c + (a - bw / 2) * u_ax + (b - bh / 2) * v_ax
                        for a, b in ((0, 0), (bw, 0), (bw, bh), (0, bh))], np.float32)
    crop = PerspectiveCrop({}, W)(image=img, quads=corners[None])["crops"][0]
    assert crop.shape == (36, 130, 3)
    jj, ii = np.meshgrid((np.arange(130) + 0.5) * bw / 130, (np.arange(36) + 0.5) * bh / 36)
    want = _content(jj, ii)
    err = np.abs(crop.astype(np.float64) - want)[2:-2, 2:-2]  # the border rows blend with the background
    assert err.mean() < 1.0 and err.max() < 4

    # the same sampling as cv2.warpPerspective (bilinear, border replicate) with the half-pixel shift made explicit
    hm = homography(np.array([[0, 0], [130, 0], [130, 36], [0, 36]], np.float64), corners.astype(np.float64))
    shift = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1.0]])
    m = np.linalg.inv(shift) @ hm @ shift  # crop index -> source index
    ref = cv2.warpPerspective(img, m, (130, 36), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REPLICATE)
    assert np.abs(ref.astype(int) - crop).max() <= 2  # cv2 interpolates in fixed point
    assert np.abs(ref.astype(int) - crop).mean() < 0.05


def test_homography_maps_the_corners() -> None:
    src = np.array([[0, 0], [50, 0], [50, 20], [0, 20]], np.float64)
    dst = np.array([[12.5, 3.0], [70.0, 10.0], [66.0, 41.0], [9.0, 30.0]])
    hm = homography(src, dst)
    p = np.c_[src, np.ones(4)] @ hm.T
    np.testing.assert_allclose(p[:, :2] / p[:, 2:], dst, atol=1e-9)
    np.testing.assert_allclose(hm, cv2.getPerspectiveTransform(src.astype(np.float32), dst.astype(np.float32)),
                               rtol=1e-4, atol=1e-6)
    # a degenerate quad (one point) gives finite pixels, the border replicated
    out = warp_quad(_img(10, 10), np.full((4, 2), 5.0), 3, 2)
    assert out.shape == (2, 3, 3) and out.dtype == np.uint8


def test_perspective_crop_rotates_tall_crops() -> None:
    img = _smooth(120, 100)
    tall = np.array([[[20, 10], [50, 10], [50, 100], [20, 100]]], np.float32)  # 30 wide, 90 tall
    upright = PerspectiveCrop({"rotate_ratio": 0}, W)(image=img, quads=tall)["crops"][0]
    assert upright.shape == (90, 30, 3)
    turned = PerspectiveCrop({}, W)(image=img, quads=tall)["crops"][0]
    assert turned.shape == (30, 90, 3) and turned.flags.c_contiguous
    np.testing.assert_array_equal(turned, np.rot90(upright))
    np.testing.assert_array_equal(turned[0, 0], upright[0, -1])  # counter-clockwise: the top right goes top left
    np.testing.assert_array_equal(turned, cv2.rotate(upright, cv2.ROTATE_90_COUNTERCLOCKWISE))
    # 90 / 30 = 3: not turned below the ratio, turned at it
    assert PerspectiveCrop({"rotate_ratio": 3.5}, W)(image=img, quads=tall)["crops"][0].shape == (90, 30, 3)
    assert PerspectiveCrop({"rotate_ratio": 3.0}, W)(image=img, quads=tall)["crops"][0].shape == (30, 90, 3)
    at = np.array([[[0, 0], [20, 0], [20, 30], [0, 30]]], np.float32)
    assert PerspectiveCrop({}, W)(image=img, quads=at)["crops"][0].shape == (20, 30, 3)


# -- orient --------------------------------------------------------------------------------------
def test_orient() -> None:
    img = _img(12, 40, seed=9)
    st = Orient({}, W)
    out = st(image=img, probs=np.array([[0.05, 0.95]], np.float32))
    assert out["angle"].dtype == np.int32 and out["angle"].shape == () and int(out["angle"]) == 180
    np.testing.assert_array_equal(out["image"], img[::-1, ::-1])
    np.testing.assert_array_equal(out["image"], cv2.rotate(img, cv2.ROTATE_180))
    for probs in ([0.15, 0.85], [0.95, 0.05], [0.5, 0.5]):  # below thresh, or upright
        kept = st(image=img, probs=np.array(probs))
        assert int(kept["angle"]) == 0
        np.testing.assert_array_equal(kept["image"], img)
    assert int(Orient({"thresh": 0.8}, W)(image=img, probs=np.array([0.15, 0.85]))["angle"]) == 180
    # logits: softmax first (auto), or when asked
    assert int(st(image=img, probs=np.array([0.0, 5.0]))["angle"]) == 180  # softmax 0.993
    assert int(st(image=img, probs=np.array([0.0, 2.0]))["angle"]) == 0  # softmax 0.88
    assert int(Orient({"softmax": True}, W)(image=img, probs=np.array([0.05, 0.95]))["angle"]) == 0  # 0.71
    assert int(Orient({"softmax": "false"}, W)(image=img, probs=np.array([0.0, 5.0]))["angle"]) == 180
    # other label orders; grey images keep their form
    assert int(Orient({"labels": [180, 0]}, W)(image=img, probs=np.array([0.97, 0.03]))["angle"]) == 180
    g = img[:, :, 0]
    turned = Orient({}, W)(image=g, probs=np.array([0.0, 1.0]))["image"]
    assert turned.shape == g.shape
    np.testing.assert_array_equal(turned, g[::-1, ::-1])
    four = Orient({"labels": [0, 90, 180, 270]}, W)
    assert int(four(image=img, probs=np.array([0.0, 0.0, 0.99, 0.01]))["angle"]) == 180
    assert int(four(image=img, probs=np.array([0.0, 0.99, 0.0, 0.01]))["angle"]) == 0


ODD = [None, "x", np.array("x"), np.array([["a"]]), np.array(3.0), np.zeros((0,)), np.zeros((2, 2, 2, 2, 2)),
       np.full((4, 4), np.inf), np.zeros((4, 4), complex), np.zeros((4, 4), bool), np.array([object()]),
       np.ones((1, 3, 4), np.float32), np.ones((3, 4, 2)) * 1e12, np.ones((2, 4)) * -5, np.zeros((1, 0, 3)), 5,
       {"a": 1}, [np.zeros(3)]]


@pytest.mark.parametrize("kind, params, good", [
    ("letterbox", {"size": [8, 8]}, {"image": _img(6, 6)}),
    ("resize", {"size": [8, 8]}, {"image": _img(6, 6)}),
    ("crop", {}, {"image": _img(6, 6), "boxes": np.array([[0, 0, 3, 3.0]])}),
    ("perspective_crop", {}, {"image": _img(6, 6), "quads": np.array([[[0, 0], [3, 0], [3, 3], [0, 3.0]]])}),
    ("orient", {}, {"image": _img(6, 6), "probs": np.array([0.5, 0.5])}),
])
def test_odd_inputs_raise_only_app_errors(kind: str, params: dict, good: dict) -> None:
    step = builtin(kind)(params, "app.yaml: stages.s")
    step(**good)
    for name in good:
        for odd in ODD:
            try:
                step(**{**good, name: odd})
            except AppError as e:
                assert str(e).startswith("app.yaml: stages.s: input "), e
