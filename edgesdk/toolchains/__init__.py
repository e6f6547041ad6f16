"""Toolchains: specs (data in toolchains/<id>/), adapters that plan conversions, and the executor."""

from edgesdk.toolchains.spec import (
    OpRule,
    OpTable,
    ToolchainSpec,
    get_op_table,
    get_toolchain,
    list_toolchains,
)

__all__ = ["OpRule", "OpTable", "ToolchainSpec", "get_op_table", "get_toolchain", "list_toolchains"]
