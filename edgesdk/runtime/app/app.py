"""`App`: an app bundle on this machine (the board, or the host for `edgesdk verify`), and `Pipeline` over frames.

    from edgesdk.runtime.app import App, Pipeline

    with App("/opt/edgesdk/current") as app:
        res = app.run({"image": frame})          # decoded results: texts, boxes, track ids
        print(res.outputs["texts"], res.timings)  # per stage: calls, ms
    for fr in Pipeline(app, "frames/"):           # a folder of images, a video file or any iterable of frames
        print(fr.index, fr.outputs["ids"])

Model stages run on `Session`s of their sub-bundles (their own engines, partition, CPU fallback); steps are the
numpy steps of edgesdk.runtime.app.steps, the same code the host's reference run used.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgesdk.runtime.app.graph import (
    AppGraph,
    AppRun,
    OutputCheck,
    StageCheck,
    VariantRunner,
    check_stages,
    first_failure,
    shape_key,
)
from edgesdk.runtime.app.manifest import AppManifest, StageSpec, input_shapes, load_app_manifest, load_values
from edgesdk.runtime.app.steps import AppError


class _SessionRunner:
    def __init__(self, session: Any) -> None:
        self.session = session

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.session.run(feed)


class App:
    """An app bundle loaded for running: every stage's sub-bundle opened (sha256s checked once, over the app)."""

    def __init__(self, bundle_dir: str | Path, engines: Iterable[Any] | None = None, fallback: str = "error", *,
                 verify: bool = True, threads: int = 0) -> None:
        """engines: what every stage's Session may use (names, or (name, options)); threads > 0: that many threads
        for each engine a stage uses (within `engines` when it names them), as the board CLI's --threads."""
        from edgesdk.runtime.session import Session, engine_choices

        self.bundle_dir = Path(bundle_dir)
        self.manifest: AppManifest = load_app_manifest(self.bundle_dir, verify=verify)
        self.sessions: dict[str, Any] = {}
        m = self.manifest
        if threads < 0:
            raise AppError(f"threads must be >= 0, got {threads}")
        engines = None if engines is None else list(engines)
        names = None if engines is None else [e if isinstance(e, str) else e[0] for e in engines]

        def session(spec: StageSpec, j: int, bdir: str) -> _SessionRunner:
            sub = self.bundle_dir / bdir
            choice = engines if not threads else engine_choices(m.sub[spec.sub_key(j)], names, threads)
            s = Session(sub, engines=choice, fallback=fallback, verify=False)
            self.sessions[spec.sub_key(j)] = s
            return _SessionRunner(s)

        def runner(spec: StageSpec) -> Any:
            if len(spec.bundles) == 1:
                return session(spec, 0, spec.bundles[0])
            return VariantRunner([(input_shapes(m.sub[spec.sub_key(j)]), session(spec, j, b))
                                  for j, b in enumerate(spec.bundles)], f"{self.bundle_dir}: stage {spec.name!r}")

        try:
            self.graph = AppGraph(m.stages, m.inputs, m.outputs, self._resolve, runner, where=str(self.bundle_dir),
                                  sha256=lambda rel: self.manifest.files.get(rel))
        except BaseException:
            self.close()
            raise

    def _resolve(self, rel: str) -> Path:
        if rel not in self.manifest.files:
            raise AppError(f"{self.bundle_dir}: {rel!r} is not a file of the app (not in manifest.json's files)")
        return self.bundle_dir / rel

    @property
    def inputs(self) -> tuple[str, ...]:
        return self.manifest.inputs

    def feed(self, inputs: Mapping[str, Any] | np.ndarray) -> dict[str, Any]:
        """A dict of app inputs; a bare array is the one input of a one-input app."""
        if isinstance(inputs, Mapping):
            return dict(inputs)
        if len(self.inputs) != 1:
            raise AppError(f"{self.bundle_dir}: the app takes inputs {list(self.inputs)}: give a dict")
        return {self.inputs[0]: inputs}

    def run(self, inputs: Mapping[str, Any] | np.ndarray, trace: bool = False) -> AppRun:
        """One frame through every stage. Stateful steps (the tracker) remember earlier frames: reset() forgets."""
        return self.graph.run(self.feed(inputs), trace=trace)

    def reset(self) -> None:
        self.graph.reset()

    def engines_used(self) -> dict[str, list[dict[str, Any]]]:
        return {k: [u.__dict__ for u in s.engines_used] for k, s in self.sessions.items()}

    # -- the reference ------------------------------------------------------------------------------------------
    def reference_inputs(self) -> list[dict[str, Any]]:
        """The app inputs of every reference sample, in order."""
        return [load_values(self.bundle_dir / s.inputs) for s in self.manifest.samples]

    def reference_outputs(self) -> list[dict[str, Any]]:
        return [load_values(self.bundle_dir / s.outputs) for s in self.manifest.samples]

    def check(self, only: Iterable[str] | None = None, samples: int | None = None) -> list[StageCheck]:
        """Every stage on its recorded reference inputs against its recorded outputs (edgesdk verify, the smoke
        test). A model stage is judged with its sub-bundle's tolerance; a step with the app's."""
        if not self.manifest.samples:
            raise AppError(f"{self.bundle_dir}: the app has no reference samples to check against")
        smp = self.manifest.samples[:samples] if samples else self.manifest.samples

        def model_compare(spec: StageSpec, out: str, got: list[Any], ref: list[Any]) -> OutputCheck:
            return model_output_check(self.manifest.sub[spec.name].tolerance, out, got, ref)

        checks = check_stages(self.graph, smp, self.bundle_dir, model_compare, self.manifest.tolerance, only)
        # a shape variant no recorded input reaches is checked on its own sub-bundle's reference, so the smoke test
        # runs every sub-bundle the board may be asked to run
        for spec in self.manifest.model_stages:
            if len(spec.bundles) == 1 or (only is not None and spec.name not in set(only)):
                continue
            reached = {shape_key(f) for f in self.stage_feeds(spec.name, smp)}
            for j in range(len(spec.bundles)):
                if input_shapes(self.manifest.sub[spec.sub_key(j)]) not in reached:
                    checks.append(self._own_reference_check(spec, j))
        return checks

    def stage_feeds(self, stage: str, samples: Iterable[Any] | None = None) -> list[dict[str, Any]]:
        """The recorded inputs of a stage over the reference samples, one feed per call (a mapped stage: one per
        item)."""
        feeds: list[dict[str, Any]] = []
        for smp in self.manifest.samples if samples is None else samples:
            files = smp.stages.get(stage)
            if files is None:
                continue
            ins = load_values(self.bundle_dir / files["inputs"])
            lists = {k: v for k, v in ins.items() if isinstance(v, list)}
            if not lists:
                feeds.append(ins)
                continue
            n = min(len(v) for v in lists.values())
            feeds += [{k: (v[i] if isinstance(v, list) else v) for k, v in ins.items()} for i in range(n)]
        return feeds

    def _own_reference_check(self, spec: StageSpec, j: int) -> StageCheck:
        """Variant j of a model stage on its sub-bundle's own reference input (what convert fitted to its shape)."""
        import time

        from edgesdk.runtime.reference import check_reference, reference_arrays

        key = spec.sub_key(j)
        sess = self.sessions[key]
        t0 = time.perf_counter()
        try:
            feed, _ = reference_arrays(sess.bundle_dir, sess.manifest)
            verdict = check_reference(sess, sess.run(feed))
        except Exception as exc:  # noqa: BLE001 - a stage's failure is its check's verdict, never a traceback
            return StageCheck(key, "model", 1, {}, (time.perf_counter() - t0) * 1e3,
                              error=f"{type(exc).__name__}: {exc}")
        outs = {name: OutputCheck(bool(c.get("ok")), c.get("max_abs_rel"), c.get("cosine"), c.get("problem"))
                for name, c in verdict.checks().items()}
        return StageCheck(key, "model", 1, outs, (time.perf_counter() - t0) * 1e3)

    def close(self) -> None:
        for s in self.sessions.values():
            s.close()
        self.sessions.clear()

    def __enter__(self) -> App:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        m = self.manifest
        return f"App({str(self.bundle_dir)!r}, {m.name!r}, {len(m.stages)} stages, board={m.board})"


def model_output_check(tol: Any, out: str, got: list[Any], ref: list[Any]) -> OutputCheck:
    """A model stage's output over the samples (lists flattened: one comparison per item) with reference.compare."""
    from edgesdk.runtime.reference import compare

    g, r = [], []
    for a, b in zip(got, ref):
        al, bl = (a, b) if isinstance(b, list) else ([a], [b])
        if len(al) != len(bl):
            return OutputCheck(False, problem=f"{len(al)} items, reference {len(bl)}")
        g += [np.asarray(x) for x in al]
        r += [np.asarray(x) for x in bl]
    if not r:
        return OutputCheck(True, problem="no items in the reference samples (nothing to compare)")
    m = compare(out, g, r, tol)
    d = m.check_dict()
    return OutputCheck(bool(d.get("ok")), d.get("max_abs_rel"), d.get("cosine"), d.get("problem"))


@dataclass
class AppFrame:
    index: int
    outputs: dict[str, Any]
    timings: dict[str, Any]
    total_ms: float


class Pipeline:
    """The app over a stream of frames, in order (stateful steps carry across frames). source: a folder of images
    (sorted by name), a video file or camera index (OpenCV), or any iterable of frames."""

    def __init__(self, app: App, source: Any, input_name: str | None = None, reset: bool = True) -> None:
        self.app = app
        self.source = source
        self.input_name = input_name or (app.inputs[0] if len(app.inputs) == 1 else None)
        if self.input_name is None:
            raise AppError(f"Pipeline: the app takes {list(app.inputs)}: name the frame input (input_name=)")
        if reset:
            app.reset()
        self.frames = 0
        self.total_ms = 0.0

    def __iter__(self) -> Iterator[AppFrame]:
        from edgesdk.runtime.pipeline import open_source

        frames = self.source if not isinstance(self.source, (str, Path, int)) else open_source(self.source)
        for i, f in enumerate(frames):
            r = self.app.run({self.input_name: f})
            self.frames += 1
            self.total_ms += r.total_ms
            yield AppFrame(i, r.outputs, {k: v.ms for k, v in r.timings.items()}, r.total_ms)

    @property
    def fps(self) -> float:
        return self.frames / (self.total_ms / 1e3) if self.total_ms else 0.0


__all__ = ["App", "AppFrame", "Pipeline", "first_failure", "model_output_check"]
