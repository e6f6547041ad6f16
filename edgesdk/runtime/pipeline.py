"""Pipeline: capture, preprocess, infer and postprocess in threads joined by bounded queues.

    source -> [capture] -q-> [pre] -q-> [infer] -q-> [post] -q-> consumer (for r in pipeline)

With drop=True (the default, for live video) a full queue drops its oldest item and counts
it, so a slow consumer sees the newest frames rather than an ever-growing backlog. With
drop=False every frame is processed (back-pressure: the capture waits).
Sources: a camera index (int), a video file, a folder of images (cv2.VideoCapture / imread;
a folder of .npy images works without OpenCV), or any iterable of (H, W, 3) uint8 images.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgesdk.runtime.errors import InputError
from edgesdk.runtime.results import Prediction

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".npy")
_END = object()


class DropQueue:
    """A bounded FIFO; put() drops the oldest item when full (drop=True) or waits (drop=False)."""

    def __init__(self, maxsize: int, drop: bool) -> None:
        if maxsize < 1:
            raise InputError(f"queue_size must be >= 1, got {maxsize}")
        self._q: collections.deque = collections.deque()
        self._max, self._drop = maxsize, drop
        self._cv = threading.Condition()
        self.dropped = 0
        self._closed = False

    def put(self, item: Any, force: bool = False) -> None:
        with self._cv:
            while not force and not self._drop and len(self._q) >= self._max and not self._closed:
                self._cv.wait(0.1)
            if not force and len(self._q) >= self._max:
                self._q.popleft()
                self.dropped += 1
            self._q.append(item)
            self._cv.notify_all()

    def get(self, timeout: float | None = None) -> Any:
        with self._cv:
            end = None if timeout is None else time.monotonic() + timeout
            while not self._q:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError
                self._cv.wait(left if left is not None else 0.1)
            item = self._q.popleft()
            self._cv.notify_all()
            return item

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()


@dataclass(frozen=True)
class FrameResult:
    index: int  # frame number at the source (gaps = dropped frames)
    prediction: Prediction
    captured_at: float  # time.monotonic() at capture
    latency_ms: float  # capture -> postprocessed


@dataclass(frozen=True)
class PipelineStats:
    captured: int
    delivered: int
    dropped: dict[str, int]  # queue (after which stage) -> frames dropped there
    elapsed_s: float

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    @property
    def fps(self) -> float:
        return self.delivered / self.elapsed_s if self.elapsed_s > 0 else 0.0


def open_source(source: Any) -> Iterator[np.ndarray]:
    """Frames from a camera index, a video file, a folder of images, or an iterable of arrays."""
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        return _folder(Path(source))
    if isinstance(source, (int, str, Path)):
        return _capture(source)
    if isinstance(source, Iterable):
        return iter(source)
    raise InputError(f"source: expected a camera index, a video file, a folder of images or an iterable of "
                     f"images, got {type(source).__name__}")


def _cv2() -> Any:
    from edgesdk.runtime.preprocess import cv2_module

    return cv2_module()


def read_image(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        return np.load(path, allow_pickle=False)
    cv2 = _cv2()
    if cv2 is None:
        raise InputError(f"{path}: reading images needs OpenCV (pip install opencv-python-headless); "
                         ".npy images work without it")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(f"{path}: not an image OpenCV can read")
    return img


def _folder(folder: Path) -> Iterator[np.ndarray]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    for p in files:
        yield read_image(p)


def _capture(source: int | str | Path) -> Iterator[np.ndarray]:
    cv2 = _cv2()
    if cv2 is None:
        raise InputError("camera and video sources need OpenCV (pip install opencv-python-headless)")
    if isinstance(source, (str, Path)) and not Path(source).exists():
        raise InputError(f"{source}: no such video file or folder")
    cap = cv2.VideoCapture(source if isinstance(source, int) else str(source))
    if not cap.isOpened():
        raise InputError(f"cannot open {'camera' if isinstance(source, int) else 'video'} {source!r}")

    def frames() -> Iterator[np.ndarray]:
        try:
            while True:
                ok, frame = cap.read()
                if not ok:
                    return
                yield frame
        finally:
            cap.release()

    return frames()


class Pipeline:
    """Streams a source through a Session's predict(), one thread per stage.

    with Pipeline(session, "video.mp4") as p:
        for r in p:            # FrameResult, newest-first under load
            ...
        print(p.stats)
    """

    def __init__(self, session: Any, source: Any, queue_size: int = 2, drop: bool = True,
                 max_frames: int | None = None) -> None:
        self.session = session
        self._source = source
        self._drop = drop
        self._max = max_frames
        names = ("capture", "preprocess", "infer", "postprocess")
        self._queues = {n: DropQueue(queue_size, drop) for n in names}
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._captured = 0
        self._delivered = 0
        self._t0 = 0.0
        self._t1: float | None = None
        self._started = False

    # -- stages --------------------------------------------------------------------------------
    def _stage(self, name: str, inq: DropQueue | None, outq: DropQueue, fn: Callable[[Any], Any] | None) -> None:
        try:
            if inq is None:  # capture
                frames = open_source(self._source)
                for i, frame in enumerate(frames):
                    if self._stop.is_set() or (self._max is not None and i >= self._max):
                        break
                    self._captured += 1
                    outq.put((i, time.monotonic(), frame))
            else:
                while not self._stop.is_set():
                    try:
                        item = inq.get(timeout=0.1)
                    except TimeoutError:
                        continue
                    if item is _END:
                        break
                    i, t, payload = item
                    outq.put((i, t, fn(payload)))  # type: ignore[misc]
        except BaseException as exc:  # handed to the consumer, raised there
            self._error = self._error or exc
            self._stop.set()
        finally:
            outq.put(_END, force=True)

    def start(self) -> Pipeline:
        if self._started:
            return self
        self._started = True
        s = self.session
        q = self._queues
        stages = [
            ("capture", None, q["capture"], None),
            ("preprocess", q["capture"], q["preprocess"], s.preprocess),
            ("infer", q["preprocess"], q["infer"], lambda fi: (s.run(fi[0]), fi[1])),
            ("postprocess", q["infer"], q["postprocess"], lambda oi: s.postprocess(oi[0], oi[1])),
        ]
        self._t0 = time.monotonic()
        for name, inq, outq, fn in stages:
            t = threading.Thread(target=self._stage, args=(name, inq, outq, fn), name=f"edgesdk-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def __iter__(self) -> Iterator[FrameResult]:
        self.start()
        out = self._queues["postprocess"]
        while True:
            item = out.get()
            if item is _END:
                break
            i, t, pred = item
            self._delivered += 1
            yield FrameResult(i, pred, t, (time.monotonic() - t) * 1e3)
        self._t1 = time.monotonic()
        self.stop()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        self._stop.set()
        for q in self._queues.values():
            q.close()
        for t in self._threads:
            t.join(timeout=5)
        if self._t1 is None and self._started:
            self._t1 = time.monotonic()

    @property
    def stats(self) -> PipelineStats:
        end = self._t1 if self._t1 is not None else time.monotonic()
        return PipelineStats(self._captured, self._delivered, {n: q.dropped for n, q in self._queues.items()},
                             end - self._t0 if self._started else 0.0)

    def __enter__(self) -> Pipeline:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["DropQueue", "FrameResult", "Pipeline", "PipelineStats", "open_source", "read_image"]
