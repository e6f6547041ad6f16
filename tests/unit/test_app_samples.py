"""scripts/app_samples.py: the sample data of the two example applications (issue 18). Generating both sets works,
is deterministic (the same bytes twice), truth.json matches the files, the rendered text and the moving faces are
where the truth says (checked against the source photos and OpenCV), and the charset comes from the model's
metadata. No model is run here (the models' readings of these files are measured by the apps' own tests)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load():
    name = "app_samples_under_test"
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "app_samples.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


S = _load()


def _png(p: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(p) as im:
        assert im.mode == "RGB"
        return np.asarray(im).copy()


def _tree(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


# -- ocr ------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ocr_dirs(tmp_path_factory):
    a, b = tmp_path_factory.mktemp("ocr_a"), tmp_path_factory.mktemp("ocr_b")
    return a, b, S.write_ocr(a), S.write_ocr(b)


def test_ocr_is_deterministic_and_truth_matches_files(ocr_dirs):
    a, b, truth, truth_b = ocr_dirs
    ta, tb = _tree(a), _tree(b)
    assert ta == tb and truth == truth_b
    assert not [n for n in ta if n.endswith(".tmp")]
    pngs = sorted(n for n in ta if n.endswith(".png"))
    assert set(ta) == set(pngs) | {"truth.json"}
    doc = json.loads((a / "truth.json").read_text(encoding="utf-8"))
    assert doc == truth and sorted(doc) == pngs
    assert 4 <= len(pngs) <= 6
    for name, lines in doc.items():
        assert isinstance(lines, list) and 2 <= len(lines) <= 8, name
        assert all(isinstance(t, str) and t.strip() == t and t for t in lines), name
    assert doc["page.png"] == list(S.PAGE_LINES)
    for sheet in S.SHEETS:
        assert doc[sheet.name] == [ln.text for ln in sheet.lines]
        assert _png(a / sheet.name).shape == (sheet.height, sheet.width, 3)
        assert 3 <= len(sheet.lines) <= 4
        ys = [ln.y for ln in sheet.lines]
        assert ys == sorted(ys), f"{sheet.name}: truth lines must be in reading order"
        assert any(ch.isdigit() for ln in sheet.lines for ch in ln.text), sheet.name


def test_page_is_the_skimage_photo_untouched(ocr_dirs):
    import skimage.io

    a = ocr_dirs[0]
    src = skimage.io.imread(S.data_dir() / "page.png")
    assert src.ndim == 2
    np.testing.assert_array_equal(_png(a / "page.png"), np.repeat(src[:, :, None], 3, axis=2))


def test_the_kinds_of_sheet_the_ocr_app_needs():
    """Dark on light, light on dark, a photo texture, a flipped line, several font sizes."""
    bgs = {s.background for s in S.SHEETS}
    assert "paper" in bgs and bgs - {"paper"}, "a plain and a photo-textured background"
    light_ink = [s for s in S.SHEETS if sum(s.ink) > 3 * 160]
    assert light_ink and all(S.render(s).mean() < 100 for s in light_ink), "light on dark"
    assert all(S.render(s).mean() > 150 for s in S.SHEETS if sum(s.ink) < 3 * 100), "dark on light"
    assert sum(ln.flipped for s in S.SHEETS for ln in s.lines) == 1
    assert len({ln.size for s in S.SHEETS for ln in s.lines}) >= 5


def _ink_box(img: np.ndarray, bg: np.ndarray, thr: float = 60.0) -> tuple[int, int, int, int] | None:
    """Bounding box (x1, y1, x2, y2) of the pixels that differ from the background by more than thr."""
    d = np.abs(img.astype(np.float32) - bg.astype(np.float32)).max(axis=2)
    ys, xs = np.nonzero(d > thr)
    return None if xs.size == 0 else (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


@pytest.mark.parametrize("sheet", S.SHEETS, ids=lambda s: s.name)
def test_each_line_is_drawn_where_it_is_declared(sheet):
    """Line by line, the ink added to the background (rendered without the other lines) lies inside the line's
    own band, with the font's size, and nothing is drawn where no line is."""
    from dataclasses import replace

    empty = S.render(replace(sheet, lines=()))
    full = S.render(sheet)
    covered = np.zeros(full.shape[:2], bool)
    for ln in sheet.lines:
        one = S.render(replace(sheet, lines=(ln,)))
        box = _ink_box(one, empty)
        assert box is not None, ln.text
        x1, y1, x2, y2 = box
        assert ln.x <= x1 < ln.x + ln.size and ln.y <= y1 < ln.y + ln.size, (ln.text, box)
        assert 0.5 * ln.size <= y2 - y1 <= 1.3 * ln.size, (ln.text, box)
        assert x2 - x1 >= 0.3 * ln.size * len(ln.text), (ln.text, box)
        covered[y1:y2, x1:x2] = True
    assert _ink_box(np.where(covered[:, :, None], empty, full), empty) is None


def test_the_flipped_line_is_the_upright_line_turned_by_180():
    from dataclasses import replace

    sheet = next(s for s in S.SHEETS if any(ln.flipped for ln in s.lines))
    ln = next(ln for ln in sheet.lines if ln.flipped)
    bg = S.render(replace(sheet, lines=()))
    down = S.render(replace(sheet, lines=(ln,))).astype(np.float32) - bg
    up = S.render(replace(sheet, lines=(replace(ln, flipped=False),))).astype(np.float32) - bg
    bu, bd = _ink_box(up + bg, bg), _ink_box(down + bg, bg)
    assert bu is not None and bd is not None
    cu = up[bu[1]:bu[3], bu[0]:bu[2]]
    cd = down[bd[1]:bd[3], bd[0]:bd[2]]
    assert cu.shape == cd.shape
    assert np.abs(cd - cu[::-1, ::-1]).mean() < 3.0  # the same glyphs, upside down
    assert np.abs(cd - cu).mean() > 10.0  # and not the same picture


def test_rendering_uses_pillows_own_truetype_font():
    from PIL import ImageFont

    f = ImageFont.load_default(size=30)
    assert isinstance(f, ImageFont.FreeTypeFont)


# -- track ----------------------------------------------------------------------------------------------------------

def _iou(a, b) -> float:
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    i = w * h
    return i / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - i)


@pytest.fixture(scope="module")
def track_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("track")
    return d, S.write_track(d)


def test_track_truth_matches_files(track_dir):
    d, doc = track_dir
    files = _tree(d)
    assert json.loads((d / "truth.json").read_text()) == doc
    assert [f["file"] for f in doc["frames"]] == [f"frame_{i:03d}.png" for i in range(12)]
    assert set(files) == {f["file"] for f in doc["frames"]} | {"truth.json"}
    for f in doc["frames"]:
        img = _png(d / f["file"])
        h, w = img.shape[:2]
        assert (h, w) == (427, 640)
        assert [o["id"] for o in f["objects"]] == [1, 2]
        for o in f["objects"]:
            x1, y1, x2, y2 = o["box"]
            assert all(isinstance(v, int) for v in o["box"])
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
            assert 60 <= x2 - x1 <= 200 and 60 <= y2 - y1 <= 200
    # away from the objects, a frame is the background photo (frame 0: they are at the left and right edges)
    import skimage.io

    bg = skimage.io.imread(S.data_dir() / S.BACKGROUND)
    np.testing.assert_array_equal(_png(d / "frame_000.png")[:, 200:390], bg[:, 200:390])


def test_track_is_deterministic(tmp_path, track_dir):
    d, doc = track_dir
    S.write_track(tmp_path)
    assert _tree(tmp_path) == _tree(d)


def test_motion_is_linear_and_the_faces_pass_near_each_other(track_dir):
    frames = track_dir[1]["frames"]
    by_id = {i: np.array([next(o["box"] for o in f["objects"] if o["id"] == i) for f in frames], float)
             for i in (1, 2)}
    for i, boxes in by_id.items():
        steps = np.diff(boxes, axis=0)
        assert np.ptp(steps, axis=0).max() <= 1.0, f"object {i}: not a straight, even path"
        assert np.abs(boxes[-1] - boxes[0])[0] > 300, f"object {i} crosses the frame"
        assert np.ptp(boxes[:, 2] - boxes[:, 0]) == 0 and np.ptp(boxes[:, 3] - boxes[:, 1]) == 0
    cx = {i: (b[:, 0] + b[:, 2]) / 2 for i, b in by_id.items()}
    assert np.sign(cx[1][0] - cx[2][0]) != np.sign(cx[1][-1] - cx[2][-1]), "they cross left-right"
    for f in frames:
        a, b = (o["box"] for o in f["objects"])
        assert _iou(a, b) == 0.0, "the faces themselves never overlap"
    gap = min(max(0, max(b[1], a[1]) - min(b[3], a[3]))
              for a, b in ((f["objects"][0]["box"], f["objects"][1]["box"]) for f in frames))
    assert gap < 120, "they pass near each other"


def test_the_truth_boxes_hold_the_source_faces(track_dir):
    """Each truth box shows the face cut from its photo: exactly for the astronaut (pasted at scale 1, on top),
    and as OpenCV's bicubic resize of the cameraman's face (pasted at 1.5, under her patch but not her face)."""
    import cv2

    d, doc = track_dir
    sprites = {s.id: s for s in S.SPRITES}
    for f in doc["frames"]:
        img = _png(d / f["file"]).astype(np.float32)
        for o in f["objects"]:
            s = sprites[o["id"]]
            x1, y1, x2, y2 = o["box"]
            got = img[y1:y2, x1:x2]
            fx1, fy1, fx2, fy2 = s.face
            src = S.photo(s.source)[fy1:fy2, fx1:fx2]
            ref = cv2.resize(src, (x2 - x1, y2 - y1), interpolation=cv2.INTER_CUBIC).astype(np.float32)
            corr = np.corrcoef(got[..., 0].ravel(), ref[..., 0].ravel())[0, 1]
            if s.scale == 1.0:
                np.testing.assert_array_equal(got, src.astype(np.float32))
            assert corr > 0.95, (f["file"], o["id"], corr)
            rows = np.abs(got - ref).mean(axis=(1, 2))  # nothing painted over any row of the face
            assert rows.max() < 12.0, (f["file"], o["id"], float(rows.max()))


def test_track_cli_json_and_bad_frames(tmp_path, capsys):
    assert S.main(["track", "--out", str(tmp_path / "t"), "--frames", "3", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["frames"] == 3 and [o["id"] for o in rep["objects"]] == [1, 2]
    assert rep["detector"]["model"] == "yolov8n-nudenet"
    assert len(list((tmp_path / "t").glob("frame_*.png"))) == 3
    assert S.main(["track", "--out", str(tmp_path / "u"), "--frames", "1"]) == 2
    assert "at least 2" in capsys.readouterr().err


def test_ocr_cli_json(tmp_path, capsys):
    assert S.main(["ocr", "--out", str(tmp_path), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["files"] == json.loads((tmp_path / "truth.json").read_text(encoding="utf-8"))


# -- charset --------------------------------------------------------------------------------------------------------

def _rec_model(path: Path, character: str | None, classes: int) -> Path:
    """A tiny ONNX 'recogniser' (Identity over N x T x classes) with the given metadata."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, classes])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, classes])
    m = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "rec", [x], [y]))
    if character is not None:
        onnx.helper.set_model_props(m, {"character": character})
    onnx.save(m, str(path))
    return path


def test_charset_from_metadata(tmp_path, capsys):
    symbols = ["a", "B", "7", "\u3000", "，", "€"]
    model = _rec_model(tmp_path / "rec.onnx", "\n".join(symbols), len(symbols) + 2)
    assert S.charset(model) == (symbols, len(symbols) + 2)
    out = tmp_path / "keys.txt"
    assert S.main(["charset", "--rec", str(model), "--out", str(out), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["symbols"] == 6 and rep["classes"] == 8 and rep["layout"] == "blank + symbols + space"
    raw = out.read_bytes()
    assert raw.endswith(b"\n") and b"\r" not in raw
    assert raw.decode("utf-8").split("\n")[:-1] == symbols


def test_charset_without_metadata_fails_clearly(tmp_path, capsys):
    model = _rec_model(tmp_path / "cls.onnx", None, 2)
    with pytest.raises(S.CharsetError, match="no 'character' metadata"):
        S.charset(model)
    assert S.main(["charset", "--rec", str(model), "--out", str(tmp_path / "k.txt")]) == 1
    err = capsys.readouterr().err
    assert "no 'character' metadata" in err and "Traceback" not in err
    assert not (tmp_path / "k.txt").exists()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(S.CharsetError, match="cannot read"):
        S.charset(bad)


REC = Path.home() / ".cache" / "edgesdk" / "zoo" / "ppocr-rec" / "ch_PP-OCRv4_rec_infer.onnx"


@pytest.mark.skipif(not REC.is_file(), reason="ppocr-rec is not in the zoo cache (scripts/zoo_fetch.py)")
def test_charset_of_the_real_pp_ocrv4_recogniser(tmp_path):
    symbols, classes = S.charset(REC)
    assert len(symbols) == 6623 and classes == 6625  # blank + 6623 + space
    assert all(len(s) == 1 for s in symbols) and len(set(symbols)) == len(symbols)
    assert " " not in symbols and "\u3000" in symbols
    assert all(c in symbols for c in "Receipt 2024-0117:.,".replace(" ", ""))
