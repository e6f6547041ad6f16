"""app.yaml: an application of several models, validated like the board profiles (errors name the file and field).

    name: ocr
    inputs: [image]                       # the app's inputs (an image: H x W x 3 uint8 BGR, or any array)
    outputs: {texts: text.text, boxes: order.boxes}
    samples: samples/                     # default for --sample: real inputs, one file a sample, in name order
    modules: [mysteps.py]                 # custom step modules the app ships (hashed like every file)
    stages:
      - name: det_pre
        step: letterbox                   # a built-in step (edgesdk.runtime.app.steps)
        inputs: {image: image}            # step input -> wire (an app input, or stage.output)
        params: {size: [640, 640], mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}
      - name: det
        model: models/det.onnx            # anything `edgesdk convert` takes, relative to app.yaml
        input_shape: [x=1,3,640,640]
        precision: fp32
        inputs: {x: det_pre.tensor}       # model input -> wire
        outputs: [map]                    # names for the model's outputs, in order (or {name: model output})
      - name: fix
        custom: mysteps.py:fix            # fn(inputs: dict, params: dict) -> dict, run on the board
        inputs: {boxes: det_post.quads}
        outputs: [boxes]

A stage with `map: true` runs once per item of its list inputs (a recogniser over the crops).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgesdk.errors import InputError

NAME_RE = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"
#: stage names the bundle uses itself (reference/<k>/app.in.npz holds the app's own inputs)
RESERVED = ("app",)


class AppSpecError(InputError):
    def __init__(self, path: str, problems: list[str]) -> None:
        self.path, self.problems = path, problems
        super().__init__(f"{path}: " + "; ".join(problems))


class StageDecl(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_RE)
    model: str | None = None
    step: str | None = None
    custom: str | None = None
    inputs: dict[str, str]
    outputs: list[str] | dict[str, str] | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    map: bool = False
    # model stages: what `edgesdk convert` takes
    input_shape: list[str] | str | None = None
    precision: str | None = Field(default=None, pattern=r"^(fp32|fp16|int8)$")
    engine: str | None = None
    target: str | None = None
    plan: str = Field(default="best", pattern=r"^(best|cpu|vendor|split|merged)$")
    trust_model: bool = False

    @model_validator(mode="after")
    def _one_kind(self) -> StageDecl:
        kinds = [k for k in ("model", "step", "custom") if getattr(self, k)]
        if len(kinds) != 1:
            raise ValueError(f"a stage is exactly one of model, step or custom (it has {kinds or 'none'})")
        if self.model is None:
            extra = [k for k in ("input_shape", "precision", "engine", "target") if getattr(self, k) is not None]
            if extra:
                raise ValueError(f"{', '.join(extra)}: only for model stages")
        if self.custom is not None and not re.match(r"^[^:]+\.py:[A-Za-z_][A-Za-z0-9_]*$", self.custom):
            raise ValueError(f"custom: expected 'module.py:function', got {self.custom!r}")
        if self.custom is not None and not self.outputs:
            raise ValueError("a custom stage declares its outputs")
        from edgesdk.graph.load import parse_input_shape

        variants = [tuple(sorted(parse_input_shape(x) for x in v)) for v in self.shape_variants()]
        if len(set(variants)) != len(variants):
            raise ValueError("input_shape: two shape variants are the same")
        return self

    @field_validator("input_shape", mode="before")
    @classmethod
    def _flow_shapes(cls, v: Any) -> Any:
        """`input_shape: [x=1,3,640,640]` is a YAML list of "x=1", 3, 640, 640: joined back into "x=1,3,640,640"
        (a new shape starts at each NAME=)."""
        if isinstance(v, list) and any(isinstance(x, int) and not isinstance(x, bool) for x in v) \
                and all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in v):
            if not (isinstance(v[0], str) and "=" in v[0]):
                raise ValueError(f"expected NAME=D0,D1,... (e.g. input_shape: [x=1,3,640,640]), got {v!r}")
            out: list[str] = []
            for x in v:
                if isinstance(x, str) and "=" in x:
                    out.append(x)
                else:
                    out[-1] += f",{x}"
            return out
        return v

    @field_validator("outputs")
    @classmethod
    def _names(cls, v: Any) -> Any:
        names = list(v) if v is not None else []
        if v is not None and not names:
            raise ValueError("an empty list of outputs: name them, or leave `outputs` out")
        bad = [n for n in names if not re.match(NAME_RE, n)]
        if bad:
            raise ValueError(f"output names must be identifiers, got {bad}")
        if len(set(names)) != len(names):
            raise ValueError("output names repeat")
        return v

    @property
    def kind(self) -> str:
        return "model" if self.model else "step" if self.step else "custom"

    def shapes(self) -> list[str]:
        s = self.input_shape
        return [s] if isinstance(s, str) else list(s or [])

    def shape_variants(self) -> list[list[str]]:
        """The input shapes the stage is converted at: one list of NAME=D0,D1,... per variant. An input named more
        than once has shape variants (`input_shape: [x=1,3,48,320, x=1,3,48,640]`: the stage is converted at each,
        and each input it is fed runs on the variant of its shape); every other input keeps its one shape."""
        from edgesdk.graph.load import parse_input_shape

        by_name: dict[str, list[str]] = {}
        for item in self.shapes():
            try:
                name, _ = parse_input_shape(item)
            except InputError as exc:
                raise ValueError(str(exc).replace("--input-shape ", "input_shape ")) from exc
            by_name.setdefault(name, []).append(item)
        n = max((len(v) for v in by_name.values()), default=1)
        bad = {k: len(v) for k, v in by_name.items() if len(v) not in (1, n)}
        if bad:
            raise ValueError(f"inputs with shape variants need as many shapes each ({n}); got {bad}")
        return [[v[j] if len(v) > 1 else v[0] for v in by_name.values()] for j in range(n)] if by_name else [[]]


class AppSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_RE)
    description: str = ""
    inputs: list[str] = Field(min_length=1)
    outputs: dict[str, str] = Field(min_length=1)
    stages: list[StageDecl] = Field(min_length=1)
    samples: str | None = None
    modules: list[str] = Field(default_factory=list)
    files: list[str] = Field(default_factory=list)
    tolerance: dict[str, float] = Field(default_factory=lambda: {"max_abs_rel": 1e-3})

    @field_validator("tolerance")
    @classmethod
    def _tolerance(cls, v: dict[str, float]) -> dict[str, float]:
        bad = sorted(set(v) - {"max_abs_rel"})
        if bad:
            raise ValueError(f"unknown key {bad[0]!r} (the app's step tolerance has max_abs_rel; a model stage is "
                             "judged by its own bundle's tolerance)")
        if any(not x >= 0 for x in v.values()):
            raise ValueError(f"max_abs_rel must be >= 0, got {v}")
        return v

    @field_validator("inputs")
    @classmethod
    def _input_names(cls, v: list[str]) -> list[str]:
        bad = [n for n in v if not re.match(NAME_RE, n)]
        if bad or len(set(v)) != len(v):
            raise ValueError(f"input names must be distinct identifiers, got {v}")
        return v

    @field_validator("outputs")
    @classmethod
    def _output_names(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [n for n in v if not re.match(NAME_RE, n)]
        if bad:
            raise ValueError(f"output names must be identifiers, got {bad}")
        return v

    @model_validator(mode="after")
    def _wiring(self) -> AppSpec:
        avail = set(self.inputs)
        names: set[str] = set()
        for i, s in enumerate(self.stages):
            if s.name in RESERVED:
                raise ValueError(f"stages.{i}.name: {s.name!r} is reserved (the bundle records the app's own inputs "
                                 "and outputs under it): choose another name")
            if s.name in names or s.name in self.inputs:
                raise ValueError(f"stages.{i}.name: {s.name!r} is used twice")
            names.add(s.name)
            for k, w in s.inputs.items():
                if w not in avail and not (w.count(".") == 1 and f"{w.split('.')[0]}.*" in avail):
                    raise ValueError(f"stages.{i}.inputs.{k}: {w!r} is no app input and no output of an earlier "
                                     f"stage (available: {', '.join(sorted(avail))})")
            outs = list(s.outputs) if s.outputs else []
            if s.step is not None:
                from edgesdk.runtime.app.steps import AppError, builtin

                try:
                    cls = builtin(s.step, f"stages.{i}.step")
                except AppError as exc:
                    raise ValueError(str(exc)) from None
                if not outs:
                    outs = list(cls.outputs)
                unknown = sorted(set(s.inputs) - set(cls.inputs) - set(cls.optional_inputs))
                if unknown:
                    raise ValueError(f"stages.{i}.inputs.{unknown[0]}: step {s.step} has no input {unknown[0]!r} "
                                     f"(its inputs: {', '.join(cls.inputs + cls.optional_inputs)})")
                missing = [n for n in cls.inputs if n not in s.inputs]
                if missing:
                    raise ValueError(f"stages.{i}.inputs: step {s.step} needs input {missing[0]!r} wired "
                                     f"(its inputs: {', '.join(cls.inputs + cls.optional_inputs)})")
                try:  # its parameters, now: a typo is refused before any model is converted
                    cls(s.params, f"stages.{i} ({s.name}).params", None)
                except AppError as exc:
                    raise ValueError(str(exc)) from None
            avail |= {f"{s.name}.{o}" for o in outs} | ({f"{s.name}.*"} if not outs else set())
        for k, w in self.outputs.items():
            stage = w.split(".", 1)[0]
            if w not in avail and f"{stage}.*" not in avail:
                raise ValueError(f"outputs.{k}: {w!r} is produced by no stage")
        return self


def _format(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        # a model validator's message names its own field (stages.3.inputs.x: ...)
        out.append(f"field {loc}: {msg}" if loc else f"field {msg}" if re.match(r"^[\w.]+: ", msg) else msg)
    return out


def load_app_spec(path: str | Path) -> AppSpec:
    """Read and validate app.yaml; AppSpecError (exit 2) naming the file and field."""
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AppSpecError(str(p), [f"cannot read: {exc.strerror or exc}"]) from exc
    except yaml.YAMLError as exc:
        raise AppSpecError(str(p), [f"not valid YAML: {exc}"]) from exc
    if not isinstance(raw, dict):
        raise AppSpecError(str(p), ["top level must be a mapping with name, inputs, outputs and stages"])
    try:
        return AppSpec.model_validate(raw)
    except ValidationError as exc:
        raise AppSpecError(str(p), _format(exc)) from exc


def looks_like_app(path: str | Path) -> bool:
    """True for a .yaml/.yml file whose top level has `stages` (what `convert` and `flash` dispatch on)."""
    p = Path(path)
    if p.suffix.lower() not in (".yaml", ".yml") or not p.is_file():
        return False
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return True  # a broken app.yaml: load_app_spec names the problem
    return isinstance(raw, dict) and "stages" in raw


__all__ = ["AppSpec", "AppSpecError", "StageDecl", "load_app_spec", "looks_like_app"]
