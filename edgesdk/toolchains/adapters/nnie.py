"""HiSilicon NNIE (Hi3519A): ONNX -> Caffe (edgesdk.caffe), host check through OpenCV, `nnie_mapper_12 <cfg>`.

The Caffe export and its OpenCV check run here; nnie_mapper is a vendor binary from the HiSVP PC
package that was not run on this machine (its .cfg is golden-tested). The board runs the .wk
through the C runner in cross/examples/nnie_runner (vendor SDK; no Python API).

.cfg values (HiSVP development guide, section 3.5.2 "配置文件说明"; the field names also in
[NN-cls]): net_type 0 = CNN; is_simulation 0 = Inst/Chip; compile_mode 0 = low bandwidth;
image_type 1 = U8 image (0 = FP32 feature map, for segments fed by a CPU segment); RGB_order
RGB|BGR; norm_type 5 = channel mean_value with data_scale, 0 = none.
"""

from __future__ import annotations

from pathlib import Path

from edgesdk.runtime.manifest import TensorSpec
from edgesdk.toolchains.adapters._accel import AcceleratorAdapter
from edgesdk.toolchains.adapters.base import Artifact, ConversionJob, EnvStatus
from edgesdk.toolchains.executor import Command, ConversionPlan, FileWrite

# image_list: the calibration images (already colour-converted and resized by edgesdk.calib) for an
# image input; else one text file per sample with the tensor's values, for an FP32 input.
_LIST = (
    "import sys, pathlib, numpy as np\n"
    "images, arrays, name, out, tdir = sys.argv[1:6]\n"
    "p = pathlib.Path(images)\n"
    "if images != '-' and p.is_dir():\n"
    "    files = sorted(str(f.resolve()) for f in p.iterdir() if f.suffix.lower() in ('.png', '.jpg', '.jpeg'))\n"
    "else:\n"
    "    a = np.load(arrays)[name]; d = pathlib.Path(tdir); d.mkdir(parents=True, exist_ok=True); files = []\n"
    "    for i, x in enumerate(a):\n"
    "        f = d / f'{i:05d}.txt'; np.savetxt(f, x.reshape(1, -1), fmt='%.6f'); files.append(str(f.resolve()))\n"
    "pathlib.Path(out).write_text('\\n'.join(files) + '\\n')\n"
)
# host check: OpenCV (4.x, in the nnie venv) runs the Caffe model on a calibration sample; onnxruntime's
# outputs for the same sample (written by the export step) must match.
_CHECK = (
    "import sys, json, numpy as np, cv2\n"
    "proto, model, ref, info_path, report = sys.argv[1:6]\n"
    "info = json.load(open(info_path)); r = np.load(ref)\n"
    "net = cv2.dnn.readNetFromCaffe(proto, model)\n"
    "for onnx_name, blob in info['inputs'].items(): net.setInput(np.ascontiguousarray(r['in:' + onnx_name]), blob)\n"
    "outs = list(info['outputs'].items()); got = net.forward([b for _, b in outs])\n"
    "diff = {o: float(np.max(np.abs(g.reshape(r['out:' + o].shape) - r['out:' + o]))) for (o, _), g in zip(outs, got)}\n"
    "json.dump({'opencv': cv2.__version__, 'max_abs_diff': diff}, open(report, 'w'))\n"
    "bad = {k: v for k, v in diff.items() if v > 1e-3 * max(1.0, float(np.abs(r['out:' + k]).max()))}\n"
    "sys.exit(f'Caffe export differs from onnxruntime: {bad}' if bad else 0)\n"
)
_REF = (
    "import sys, numpy as np, onnxruntime as ort\n"
    "model, calib, out = sys.argv[1:4]\n"
    "s = ort.InferenceSession(model, providers=['CPUExecutionProvider']); d = np.load(calib)\n"
    "feed = {i.name: d[i.name][:1].astype(np.float32) for i in s.get_inputs()}\n"
    "res = s.run(None, feed)\n"
    "np.savez(out, **{'in:' + k: v for k, v in feed.items()}, **{'out:' + o.name: r for o, r in zip(s.get_outputs(), res)})\n"
)


def nnie_cfg(job: ConversionJob, prototxt: Path, caffemodel: Path, image_list: Path, wk: Path,
             mean_file: Path | None, data_scale: float | None, rgb: str) -> str:
    """The nnie_mapper .cfg, one `[field] value` per line."""
    image = mean_file is not None
    lines = [
        ("prototxt_file", str(prototxt)), ("caffemodel_file", str(caffemodel)), ("net_type", "0"),
        ("is_simulation", "0"), ("output_wk_name", str(wk)), ("compile_mode", str(job.options.get("compile_mode", 0))),
        ("log_level", "0"), ("align_bytes", "16"), ("batch_num", "1"), ("sparse_rate", "0"),
        ("image_list", str(image_list)), ("image_type", "1" if image else "0"), ("RGB_order", rgb),
        ("norm_type", "5" if image else "0"),
    ]
    if image:
        lines += [("mean_file", str(mean_file)), ("data_scale", f"{data_scale:.10g}")]
    else:
        lines += [("mean_file", "null")]
    return "".join(f"[{k}] {v}\n" for k, v in lines)


class NnieAdapter(AcceleratorAdapter):
    id = "nnie"
    engine = "nnie"
    scheme = "nnie"
    vendor_tools = ("nnie_mapper",)
    vendor_binary = "nnie_mapper_12"
    vendor_roles = ("wk",)
    install_hint = ("copy nnie_mapper_12 from HiSVP_PC_V*/tool/nnie/linux/mapper of the Hi3519A V100 SDK onto PATH "
                    "(x86-64 Linux; not publicly downloadable)")

    def check_env(self) -> EnvStatus:
        if not self.venv_ready():
            return EnvStatus(self.id, False, None, f"the nnie venv {self.venv} (OpenCV 4.x, which checks the Caffe "
                             "export) does not exist", "edgesdk toolchain install nnie")
        from edgesdk.toolchains.install import venv_package_version

        ver = venv_package_version(self.venv, "opencv-python-headless")
        return EnvStatus(self.id, ver is not None, ver, f"OpenCV {ver} for the Caffe check; nnie_mapper: "
                         f"{self.vendor_env().detail}", None if ver else "edgesdk toolchain install nnie --force")

    def plan(self, job: ConversionJob) -> ConversionPlan:
        self.need_calib(job)
        assert job.calib is not None
        w, s = job.work, job.segment
        proto, model = w / f"{s}.prototxt", w / f"{s}.caffemodel"
        info, ref, report = w / f"{s}_caffe.json", w / f"{s}_caffe_ref.npz", w / f"{s}_caffe_check.json"
        image_list, cfg, wk = w / f"{s}_image_list.txt", w / f"{s}.cfg", w / f"{s}_nnie" / f"{s}.wk"
        cal = job.calib
        image = cal.images is not None and cal.mean is not None and cal.normal is not None and len(job.inputs) == 1
        export = [self.host_python, "-m", "edgesdk.caffe.export", "--onnx", str(job.onnx), "--prototxt", str(proto),
                  "--caffemodel", str(model), "--name", s, "--json", str(info)]
        writes = []
        mean_file = None
        scale = None
        if image:
            assert cal.mean is not None and cal.normal is not None
            # model input = (p - mean) * normal per channel; NNIE has one data_scale: the rest goes into a Scale layer
            scale = float(cal.normal[0])
            if any(abs(n - scale) > 1e-12 for n in cal.normal):
                export += ["--input-scale", f"{job.inputs[0].name}=" + ",".join(f"{n / scale:.10g}" for n in cal.normal)]
            mean_file = w / f"{s}_mean.txt"
            writes.append(FileWrite(mean_file, "".join(f"{m:.6f}\n" for m in cal.mean).encode(),
                                    "per-channel mean for norm_type 5 (channel mean_value with data_scale)"))
        cfg_text = nnie_cfg(job, proto, model, image_list, wk, mean_file, scale, cal.color)
        writes.append(FileWrite(cfg, cfg_text.encode(), "nnie_mapper configuration"))
        cmds = [
            self.sim_command(job),
            Command("caffe-export", tuple(export), cwd=w, timeout=600,
                    purpose="ONNX -> Caffe prototxt + caffemodel (NNIE-supported standard layers)"),
            Command("onnxruntime", (self.host_python, "-c", _REF, str(job.onnx), str(cal.arrays), str(ref)), cwd=w,
                    timeout=600, purpose="onnxruntime reference outputs of the first calibration sample"),
            Command("opencv-caffe", (str(self.python), "-c", _CHECK, str(proto), str(model), str(ref), str(info),
                                     str(report)), cwd=w, timeout=600,
                    purpose="load the Caffe model with OpenCV 4.x (cv2.dnn.readNetFromCaffe) and match onnxruntime"),
            Command("python", (self.host_python, "-c", _LIST, str(cal.images) if image else "-", str(cal.arrays),
                               job.inputs[0].name, str(image_list), str(w / f"{s}_calib_txt")), cwd=w, timeout=600,
                    purpose="image_list for nnie_mapper's calibration"),
            Command("nnie_mapper", (self.vendor, str(cfg)), cwd=w, timeout=3600,
                    purpose="map the Caffe model to an NNIE .wk (int8)"),
        ]
        return ConversionPlan(self.id, self.engine, "int8", tuple(writes), tuple(cmds),
                              {"sim": self.sim_path(job), "prototxt": proto, "caffemodel": model, "caffe_info": info,
                               "caffe_check": report, "cfg": cfg, "wk": wk})

    def describe(self, job: ConversionJob, plan: ConversionPlan) -> Artifact:
        import json

        info = json.loads(plan.outputs["caffe_info"].read_text(encoding="utf-8"))
        ins = tuple(TensorSpec(i.name, i.shape, i.dtype, engine_name=info["inputs"].get(i.name)) for i in job.inputs)
        outs = tuple(TensorSpec(o.name, o.shape, o.dtype, engine_name=info["outputs"].get(o.name)) for o in job.outputs)
        return Artifact({"wk": plan.outputs["wk"]}, ins, outs)


__all__ = ["NnieAdapter", "nnie_cfg"]
