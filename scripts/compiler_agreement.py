"""Check edgesdk's op tables against the vendor compilers (issue 15, item 4): per node, the placement edgesdk predicts
(edgesdk.graph.support over the board's op table) against what the compiler did.

- rk3588: toolchains/rknn/ops.yaml against RKNN-Toolkit2 2.5.0 (its per-op layer table, mapped back to ONNX nodes by
  the rknn adapter).
- imx93: toolchains/vela/ops.yaml against vela 5.2.0 (Ethos-U65-256): the tflite toolchain's full-integer int8 TFLite
  (onnx2tf), compiled by vela with --show-cpu-operations (per TFLite op NPU/CPU, named by the op's output tensor).
  onnx2tf names TFLite tensors after Keras layers, so each ONNX node is found in onnx2tf's float32 TFLite by value
  (edgesdk/toolchains/adapters/_tflite_values.py, as the tflite adapter's mixed precision does), and the float32
  TFLite's ops are aligned with the int8 TFLite's (same op sequence; names differ). A TFLite op vela does not list
  was fused into a neighbouring NPU op (PAD into CONV_2D, CONV_2D + HARD_SWISH) or removed (RESHAPE): it counts as
  NPU. Also per model: vela's estimated ms (NPU only, static), edgesdk's own roofline estimate for imx93 (what
  `edgesdk inspect --board imx93` shows), and the int8 TFLite (interpreter, host) against onnxruntime fp32 (cosine)
  on the first calibration sample.

    .venv/bin/python scripts/compiler_agreement.py [--board rk3588|imx93|all] [--zoo ppocr-cls,ppocr-rec,...]
        [model.onnx ...] [--json]

Each model is prepared as `edgesdk convert` prepares it (onnxslim), then built int8 on 4 random calibration samples
(placement does not depend on the values; cosines on random input are smoke numbers, not accuracy). Nodes that cannot
be mapped to a compiler op are counted apart ("unmapped"), not as agreement. Prints Markdown tables and every
disagreement.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

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


def _prepared(name: str, path: Path, work: Path, shapes: dict[str, tuple[int, ...]] | None, board_id: str,
              options: dict[str, Any]) -> tuple[Any, Any, dict[str, str], Any]:
    """The model as convert prepares it, the board, edgesdk's predicted placement (node -> npu|cpu) and an int8
    ConversionJob of the whole model on 4 random calibration samples."""
    from edgesdk.boards import get_board
    from edgesdk.graph.load import load_model
    from edgesdk.graph.prepare import prepare
    from edgesdk.graph.support import check_support
    from edgesdk.toolchains.adapters.base import CalibData, ConversionJob, IOSpec

    board = get_board(board_id)
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
                        options)
    return m, board, predicted, job


def agreement(name: str, path: Path, work: Path, shapes: dict[str, tuple[int, ...]] | None = None
              ) -> dict[str, object]:
    """rk3588: edgesdk's placement against RKNN-Toolkit2's layer table."""
    from edgesdk.toolchains.adapters.rknn import RknnAdapter
    from edgesdk.toolchains.executor import execute

    m, _, predicted, job = _prepared(name, path, work, shapes, "rk3588", {"simulate": True})
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
    return {"board": "rk3588", "model": name, "nodes": len(predicted), "mapped": len(both),
            "unmapped": len(predicted) - len(both),
            "agreement": round(100.0 * len(agree) / len(both), 1) if both else None,
            "npu_share_compiler": round(100.0 * npu / len(actual), 1) if actual else None,
            "simulator_cosine": rep.get("cosine", {}), "disagreements": diffs}


# -- imx93: vela --------------------------------------------------------------------------------------------------

def _cosines(a: Any, job: Any, plan: Any, m: Any) -> dict[str, Any]:
    """int8 TFLite (LiteRT interpreter, host) against onnxruntime fp32, per output, on the first calibration sample."""
    import onnxruntime as ort

    from edgesdk.runtime.reference import cosine
    from edgesdk.toolchains.check import run_artifact

    with np.load(job.calib.arrays) as z:
        feed = {k: z[k][:1] for k in z.files}
    try:
        ins, outs = a.tflite_io(job, plan)
        got = run_artifact("tflite", {"model": plan.outputs["tflite"]}, ins, outs, {}, [feed])[0]
    except Exception as exc:  # noqa: BLE001 - the placement is still measured; the cosine says why it is missing
        return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
    sess = ort.InferenceSession(m.proto.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))
    return {k: round(cosine(got[k], ref[k]), 4) for k in got}


def agreement_vela(name: str, path: Path, work: Path, shapes: dict[str, tuple[int, ...]] | None = None
                   ) -> dict[str, object]:
    """imx93: edgesdk's placement against vela's, per ONNX node; vela's and edgesdk's estimates; int8 cosine."""
    from edgesdk.graph.report import analyze, build_report
    from edgesdk.toolchains.adapters.vela import VelaAdapter
    from edgesdk.toolchains.executor import execute

    m, board, predicted, job = _prepared(name, path, work, shapes, "imx93", {})
    a = VelaAdapter()
    plan = a.without_simulation(a.plan(job))  # the host int8 simulation is not what is measured here
    execute(plan)
    rep = a.report(plan)
    mapping, placed, unmapped = a.node_placement(job, plan)
    both = [n for n in predicted if n in placed]
    agree = [n for n in both if predicted[n] == placed[n][0]]
    ops = {n.name: n.op_type for n in m.proto.graph.node}
    diffs = [{"node": n, "op": ops.get(n, "?"), "edgesdk": predicted[n], "vela": placed[n][0],
              "vela_op": placed[n][1], "reason": placed[n][2]} for n in both if predicted[n] != placed[n][0]]
    est = build_report(analyze(m, board))
    npu_ms = sum(e.ms for e in est.estimates if e.target == "accelerator")
    total_ops = rep["npu_ops"] + rep["cpu_ops"]
    return {"board": "imx93", "model": name, "nodes": len(predicted), "mapped": len(both),
            "unmapped": len(predicted) - len(both),
            "agreement": round(100.0 * len(agree) / len(both), 1) if both else None,
            "npu_share_vela_ops": round(100.0 * rep["npu_ops"] / total_ops, 1) if total_ops else None,
            "vela_npu_ops": rep["npu_ops"], "vela_cpu_ops": rep["cpu_ops"],
            "vela_ms": rep["estimate"].get("inference_ms"), "edgesdk_ms": round(est.estimate_ms, 3),
            "edgesdk_npu_ms": round(npu_ms, 3), "int8_cosine": _cosines(a, job, plan, m),
            "tflite_ops_aligned": f"{mapping['aligned']}/{mapping['float_ops']}",
            "fused_by_vela": sum(1 for n in both if placed[n][1] == "(fused/removed by vela)"),
            "unmapped_why": dict(sorted(unmapped.items())), "disagreements": diffs}


def _print_rk3588(rows: list[dict]) -> None:
    print("| model | nodes | mapped | agreement | NPU share (compiler) | simulator cosine |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | - | - | - | - | {r['error']} |")
            continue
        cos = ", ".join(f"{v:.4f}" for v in r["simulator_cosine"].values()) or "-"
        print(f"| {r['model']} | {r['nodes']} | {r['mapped']} | {r['agreement']}% | {r['npu_share_compiler']}% "
              f"| {cos} |")
    for r in rows:
        for x in r.get("disagreements", []):
            print(f"- {r['model']}: {x['node']} ({x['op']}): edgesdk {x['edgesdk']}, rknn {x['rknn']}")


def _print_imx93(rows: list[dict]) -> None:
    print("| model | ONNX nodes | mapped | agreement | NPU share (vela, ops) | vela est. ms (NPU) | edgesdk est. ms "
          "(total / NPU part) | int8 TFLite vs fp32 cosine |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | - | - | - | - | - | - | {r['error']} |")
            continue
        cos = ", ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in r["int8_cosine"].values()) or "-"
        vms = "-" if r["vela_ms"] is None else f"{r['vela_ms']:.3f}"
        print(f"| {r['model']} | {r['nodes']} | {r['mapped']} | {r['agreement']}% | {r['npu_share_vela_ops']}% "
              f"({r['vela_npu_ops']}/{r['vela_npu_ops'] + r['vela_cpu_ops']}) | {vms} | "
              f"{r['edgesdk_ms']:.3f} / {r['edgesdk_npu_ms']:.3f} | {cos} |")
    for r in rows:
        for x in r.get("disagreements", []):
            why = f": {x['reason']}" if x["reason"] else ""
            print(f"- {r['model']}: {x['node']} ({x['op']}): edgesdk {x['edgesdk']}, vela {x['vela']} "
                  f"({x['vela_op']}){why}")


BOARDS = {"rk3588": (agreement, _print_rk3588), "imx93": (agreement_vela, _print_imx93)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", type=Path)
    ap.add_argument("--zoo", default="", help="comma-separated zoo ids (scripts/zoo_models.yaml)")
    ap.add_argument("--board", choices=[*BOARDS, "all"], default="all")
    ap.add_argument("--work", type=Path, default=None, help="keep the builds in this folder (default: a temporary one)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    todo = {p.stem: (p, {}) for p in a.models}
    if a.zoo:
        todo.update(_zoo(a.zoo))
    boards = list(BOARDS) if a.board == "all" else [a.board]
    rows: dict[str, list[dict]] = {b: [] for b in boards}
    with tempfile.TemporaryDirectory() as d:
        root = a.work or Path(d)
        for b in boards:
            for name, (p, shapes) in todo.items():
                work = root / b / name
                work.mkdir(parents=True, exist_ok=True)
                try:
                    rows[b].append(BOARDS[b][0](name, p, work, shapes))
                except Exception as exc:  # a model the compiler refuses is a row, not the end of the run
                    rows[b].append({"board": b, "model": name,
                                    "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"})
                print(f"{b} {name}: done", file=sys.stderr)
    if a.json:
        print(json.dumps([r for b in boards for r in rows[b]], indent=2))
        return 0
    for b in boards:
        if len(boards) > 1:
            print(f"\n{b}\n")
        BOARDS[b][1](rows[b])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
