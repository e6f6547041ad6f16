"""Check edgesdk's op tables against the vendor compiler (issue 15, item 4): per node, the placement edgesdk predicts
for the RK3588 NPU (toolchains/rknn/ops.yaml through edgesdk.graph.support) against what RKNN-Toolkit2 2.5.0 did
(its per-op layer table, mapped back to ONNX nodes by the rknn adapter).

    .venv/bin/python scripts/compiler_agreement.py [--zoo ppocr-cls,ppocr-rec,...] [model.onnx ...] [--json]

Each model is prepared as `edgesdk convert` prepares it (onnxslim), then built for rk3588 with int8 on 4 random
calibration samples (placement does not depend on the values). Nodes the compiler fused or renamed beyond mapping
are counted apart ("unmapped"), not as agreement. Prints a Markdown table and every disagreement.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]


def _zoo(ids: str) -> dict[str, tuple[Path, dict[str, tuple[int, ...]]]]:
    """Zoo models with the static input shapes the zoo uses (scripts/zoo_models.yaml `inputs`)."""
    spec = importlib.util.spec_from_file_location("zoo_fetch", ROOT / "scripts" / "zoo_fetch.py")
    zf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(zf)  # type: ignore[union-attr]
    paths = zf.fetch(ids.split(","))
    entries = {e["id"]: e for e in zf.load_entries()}
    return {k: (Path(v), dict(zf.parse_shape(x) for x in entries[k].get("inputs", []))) for k, v in paths.items()}


def agreement(name: str, path: Path, work: Path, shapes: dict[str, tuple[int, ...]] | None = None
              ) -> dict[str, object]:
    from edgesdk.boards import get_board
    from edgesdk.graph.load import load_model
    from edgesdk.graph.prepare import prepare
    from edgesdk.graph.support import check_support
    from edgesdk.toolchains.adapters.base import CalibData, ConversionJob, IOSpec
    from edgesdk.toolchains.adapters.rknn import RknnAdapter
    from edgesdk.toolchains.executor import execute

    board = get_board("rk3588")
    m = prepare(load_model(path, shapes or None)).model
    predicted = {p.node: ("npu" if p.target == "accelerator" else "cpu") for p in check_support(m, board).placements}
    onnx_path = work / f"{name}.onnx"
    onnx.save(m.proto, str(onnx_path))
    ins = []
    arrays = {}
    rng = np.random.default_rng(0)
    for n in m.inputs:
        shape = tuple(int(d) for d in m.tensors[n].shape)
        ins.append(IOSpec(n, shape))
        arrays[n] = rng.uniform(0, 1, (4, *shape[1:])).astype(np.float32)
    np.savez(work / f"{name}_calib.npz", **arrays)
    outs = tuple(IOSpec(o, tuple(int(d) for d in m.tensors[o].shape)) for o in m.outputs)
    job = ConversionJob(name, onnx_path, work, "int8", tuple(ins), outs, CalibData(work / f"{name}_calib.npz", 4),
                        {"simulate": True})
    a = RknnAdapter()
    plan = a.plan(job)
    execute(plan)
    view = a.compiler_view(plan, [(n.name, list(n.input), list(n.output)) for n in m.proto.graph.node])
    actual: dict[str, str] = view["placement"]
    rep = json.loads(plan.outputs["report"].read_text()) if plan.outputs["report"].is_file() else {}
    both = [n for n in predicted if n in actual]
    agree = [n for n in both if predicted[n] == actual[n]]
    ops = {n.name: n.op_type for n in m.proto.graph.node}
    diffs = [{"node": n, "op": ops.get(n, "?"), "edgesdk": predicted[n], "rknn": actual[n]}
             for n in both if predicted[n] != actual[n]]
    npu = sum(1 for v in actual.values() if v == "npu")
    return {"model": name, "nodes": len(predicted), "mapped": len(both), "unmapped": len(predicted) - len(both),
            "agreement": round(100.0 * len(agree) / len(both), 1) if both else None,
            "npu_share_compiler": round(100.0 * npu / len(actual), 1) if actual else None,
            "simulator_cosine": rep.get("cosine", {}), "disagreements": diffs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", type=Path)
    ap.add_argument("--zoo", default="", help="comma-separated zoo ids (scripts/zoo_models.yaml)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    todo = {p.stem: (p, {}) for p in a.models}
    if a.zoo:
        todo.update(_zoo(a.zoo))
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name, (p, shapes) in todo.items():
            try:
                rows.append(agreement(name, p, Path(d), shapes))
            except Exception as exc:  # a model the compiler refuses is a row, not the end of the run
                rows.append({"model": name, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"})
            print(f"{name}: done", file=sys.stderr)
    if a.json:
        print(json.dumps(rows, indent=2))
        return 0
    print("| model | nodes | mapped | agreement | NPU share (compiler) | simulator cosine |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | - | - | - | - | {r['error']} |")
            continue
        cos = ", ".join(f"{v:.4f}" for v in r["simulator_cosine"].values()) or "-"
        print(f"| {r['model']} | {r['nodes']} | {r['mapped']} | {r['agreement']}% | {r['npu_share_compiler']}% | {cos} |")
    for r in rows:
        for x in r.get("disagreements", []):
            print(f"- {r['model']}: {x['node']} ({x['op']}): edgesdk {x['edgesdk']}, rknn {x['rknn']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
