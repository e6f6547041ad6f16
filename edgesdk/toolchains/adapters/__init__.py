"""Toolchain adapters: one module per toolchain, each with check_env, plan(job) and describe(job)."""

from __future__ import annotations

from edgesdk.errors import InputError
from edgesdk.toolchains.adapters.base import (
    Adapter,
    Artifact,
    CalibData,
    ConversionJob,
    ConversionRefused,
    EnvStatus,
    IOSpec,
)

#: toolchain id -> (module, class); imported on use.
ADAPTERS: dict[str, tuple[str, str]] = {
    "ncnn": ("edgesdk.toolchains.adapters.ncnn", "NcnnAdapter"),
    "mnn": ("edgesdk.toolchains.adapters.mnn", "MnnAdapter"),
    "tflite": ("edgesdk.toolchains.adapters.tflite", "TfliteAdapter"),
    "onnxruntime": ("edgesdk.toolchains.adapters.onnxruntime", "OnnxRuntimeAdapter"),
}
#: The engines `edgesdk convert` can target on the CPU (engine id == toolchain id for these).
CPU_ENGINES = tuple(ADAPTERS)


def adapter_class(engine: str) -> type[Adapter]:
    import difflib
    import importlib

    if engine not in ADAPTERS:
        hint = difflib.get_close_matches(engine, list(ADAPTERS), n=1)
        dym = f" Did you mean {hint[0]!r}?" if hint else ""
        raise InputError(f"unknown engine {engine!r}.{dym} edgesdk convert knows: {', '.join(ADAPTERS)}")
    mod, cls = ADAPTERS[engine]
    return getattr(importlib.import_module(mod), cls)


def get_adapter(engine: str, **kwargs: object) -> Adapter:
    return adapter_class(engine)(**kwargs)  # type: ignore[arg-type]


__all__ = ["ADAPTERS", "CPU_ENGINES", "Adapter", "Artifact", "CalibData", "ConversionJob", "ConversionRefused",
           "EnvStatus", "IOSpec", "adapter_class", "get_adapter"]

#: accelerator engine (board.accelerator.engine) -> (module, class) of its toolchain adapter.
ACCELERATOR_ADAPTERS: dict[str, tuple[str, str]] = {
    "edgetpu": ("edgesdk.toolchains.adapters.edgetpu", "EdgeTpuAdapter"),
    "vart": ("edgesdk.toolchains.adapters.vitis_ai", "VitisAiAdapter"),
    "nnie": ("edgesdk.toolchains.adapters.nnie", "NnieAdapter"),
    "bpu": ("edgesdk.toolchains.adapters.horizon", "HorizonAdapter"),
}


def accelerator_adapter_class(engine: str) -> type[Adapter]:
    import importlib

    if engine not in ACCELERATOR_ADAPTERS:
        raise InputError(f"no toolchain adapter for accelerator engine {engine!r}; known: "
                         f"{', '.join(ACCELERATOR_ADAPTERS)}")
    mod, cls = ACCELERATOR_ADAPTERS[engine]
    return getattr(importlib.import_module(mod), cls)


__all__ += ["ACCELERATOR_ADAPTERS", "accelerator_adapter_class"]
