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

from edgesdk.toolchains.spec import list_toolchains


def _registry(kind: str) -> dict[str, tuple[str, str]]:
    """From the toolchain records (`adapter: module:Class`): CPU toolchains by toolchain id (== their engine id),
    accelerator toolchains by the runtime engine that drives the accelerator (board.accelerator.engine)."""
    out: dict[str, tuple[str, str]] = {}
    for t in list_toolchains():
        if t.kind == kind:
            mod, cls = t.adapter.split(":")
            out[t.id if kind == "cpu" else t.engine] = (mod, cls)
    return out


#: toolchain id -> (module, class); imported on use.
ADAPTERS: dict[str, tuple[str, str]] = _registry("cpu")
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
ACCELERATOR_ADAPTERS: dict[str, tuple[str, str]] = _registry("accelerator")


def accelerator_adapter_class(engine: str) -> type[Adapter]:
    import importlib

    if engine not in ACCELERATOR_ADAPTERS:
        raise InputError(f"no toolchain adapter for accelerator engine {engine!r}; known: "
                         f"{', '.join(ACCELERATOR_ADAPTERS)}")
    mod, cls = ACCELERATOR_ADAPTERS[engine]
    return getattr(importlib.import_module(mod), cls)


__all__ += ["ACCELERATOR_ADAPTERS", "accelerator_adapter_class"]
