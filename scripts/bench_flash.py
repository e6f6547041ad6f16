"""Flash benchmarks (docs/benchmarks.md, "Flash"): each figure is measured in one run beside its peer.

1. Push of a 256 MB file over loopback to a local OpenSSH sshd: OpenSSH scp, stock paramiko
   SFTPClient.put, and edgesdk's transfer (AES-GCM, 255 KiB pipelined writes), alternated, N rounds.
2. Re-flash of an unchanged bundle: bytes sent.
3. Fleets of 8/16/32 local sshd boards: edgesdk's fleet flash vs Ansible's `copy` module with the same
   forks (when `ansible-playbook` is found: $ANSIBLE_PLAYBOOK or PATH).

Run as root (it starts sshd): .venv/bin/python scripts/bench_flash.py [--rounds 3] [--fleets 8,16,32]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from sshd_fixture import board_python, local_profile, make_test_bundle, public_dir, start_sshd  # noqa: E402

from edgesdk.deploy.flash import FlashOptions, flash  # noqa: E402
from edgesdk.deploy.fleet import InventoryHost, deploy_fleet  # noqa: E402


def push_bench(rounds: int, size_mb: int) -> dict:
    from edgesdk.deploy.board import RemoteBoard
    from edgesdk.deploy.transfer import LocalFile, push, sha256_file
    from edgesdk.deploy.transport import SSHConnection

    b = start_sshd("bench")
    d = public_dir("edgesdk-bench-")
    src = d / "blob.bin"
    with open(src, "wb") as fh:
        for _ in range(size_mb // 16):
            fh.write(os.urandom(16 << 20))
    size = src.stat().st_size
    b.base.mkdir(parents=True, exist_ok=True)
    res: dict[str, list[float]] = {"scp": [], "paramiko_put": [], "edgesdk": []}
    lf = LocalFile(src, sha256_file(src), size)
    try:
        for _ in range(rounds):
            t = time.perf_counter()
            subprocess.run(["scp", "-q", "-i", str(b.key), "-P", str(b.port), "-o", f"UserKnownHostsFile={b.known_hosts}",
                            str(src), f"root@127.0.0.1:{b.base}/scp.bin"], check=True)
            res["scp"].append(size / (time.perf_counter() - t) / 1e6)
            import paramiko

            cl = paramiko.SSHClient()
            cl.load_host_keys(str(b.known_hosts))
            cl.connect("127.0.0.1", port=b.port, username="root", key_filename=str(b.key), allow_agent=False,
                       look_for_keys=False)
            sf = cl.open_sftp()
            t = time.perf_counter()
            sf.put(str(src), f"{b.base}/put.bin")
            res["paramiko_put"].append(size / (time.perf_counter() - t) / 1e6)
            cl.close()
            with SSHConnection(b.target()) as c:
                rb = RemoteBoard(c).open()
                rb.lock("bench")
                shutil.rmtree(b.base / "staging", ignore_errors=True)
                t = time.perf_counter()
                st = push(rb, "staging/bench", {"blob.bin": lf})  # includes the sha256 check on the board
                el = time.perf_counter() - t
                rb.unlock()
            assert st.bytes_sent == size
            res["edgesdk"].append(size / el / 1e6)
            shutil.rmtree(b.base / "staging", ignore_errors=True)
            for f in ("scp.bin", "put.bin"):
                (b.base / f).unlink(missing_ok=True)
    finally:
        b.stop()
        shutil.rmtree(d, ignore_errors=True)
    med = {k: sorted(v)[len(v) // 2] for k, v in res.items()}
    return {"size_mb": size / 1e6, "rounds": rounds, "mb_per_s": {k: [round(x) for x in v] for k, v in res.items()},
            "median": {k: round(v) for k, v in med.items()},
            "edgesdk_vs_scp": round(med["edgesdk"] / med["scp"], 2),
            "edgesdk_vs_put": round(med["edgesdk"] / med["paramiko_put"], 2)}


def reflash_bench() -> dict:
    b = start_sshd("reflash")
    d = public_dir("edgesdk-bench-")
    try:
        bundle = make_test_bundle(d / "b", pad_bytes=64 << 20)
        py, root_ok = board_python()
        opts = FlashOptions(python=py, allow_root_smoke=root_ok)
        r1 = flash(bundle, local_profile(), b.target(), opts)
        r2 = flash(bundle, local_profile(), b.target(), opts)
        assert r1.ok and r2.ok
        return {"bundle_bytes": r1.bytes_total, "first_sent": r1.bytes_sent, "reflash_sent": r2.bytes_sent,
                "reflash_fraction": r2.bytes_sent / r1.bytes_total, "reflash_seconds": round(sum(r2.phases.values()), 2)}
    finally:
        b.stop()
        shutil.rmtree(d, ignore_errors=True)


def fleet_bench(n: int, ansible: str | None) -> dict:
    first = start_sshd("fl0")
    boards = [first] + [start_sshd(f"fl{i}", client_key=first.key) for i in range(1, n)]
    d = public_dir("edgesdk-bench-")
    try:
        kh = d / "known_hosts"
        kh.write_text("".join(b.known_hosts.read_text() for b in boards))
        bundle = make_test_bundle(d / "b", pad_bytes=8 << 20)
        hosts = [InventoryHost(f"b{i}", "127.0.0.1", b.port, "root", str(first.key), str(b.base))
                 for i, b in enumerate(boards)]
        t = time.perf_counter()
        fr = deploy_fleet(bundle, local_profile(), hosts, FlashOptions(python=board_python()[0], allow_root_smoke=board_python()[1]), parallel=n,
                          target_defaults={"known_hosts": kh})
        ours = time.perf_counter() - t
        assert fr.ok, [r.error for r in fr.results if not r.ok]
        out = {"boards": n, "forks": n, "edgesdk_s": round(ours, 2),
               "edgesdk_includes": "probe, lock, push, sha256 check, install, switch, smoke test"}
        if ansible:
            inv = d / "inv.ini"
            inv.write_text("[b]\n" + "".join(
                f"b{i} ansible_host=127.0.0.1 ansible_port={b.port} ansible_user=root\n" for i, b in enumerate(boards)))
            pb = d / "copy.yml"
            pb.write_text(f"- hosts: b\n  gather_facts: false\n  tasks:\n    - file: {{path: '{{{{ dest }}}}', state: directory}}\n"
                          f"    - copy: {{src: '{bundle}/', dest: '{{{{ dest }}}}/'}}\n")
            env = dict(os.environ, ANSIBLE_HOST_KEY_CHECKING="True", ANSIBLE_SSH_ARGS=f"-o UserKnownHostsFile={kh}",
                       ANSIBLE_PRIVATE_KEY_FILE=str(first.key), ANSIBLE_PYTHON_INTERPRETER="/usr/bin/python3")
            for i, b in enumerate(boards):
                pass
            t = time.perf_counter()
            r = subprocess.run([ansible, "-i", str(inv), "-f", str(n), str(pb), "-e", f"dest={d}/ansible/{{{{ inventory_hostname }}}}"],
                               capture_output=True, text=True, env=env, timeout=1800)
            out["ansible_copy_s"] = round(time.perf_counter() - t, 2)
            out["ansible_ok"] = r.returncode == 0
            if r.returncode:
                out["ansible_tail"] = r.stdout[-800:] + r.stderr[-800:]
            out["ratio"] = round(ours / out["ansible_copy_s"], 2)
        return out
    finally:
        for b in boards:
            b.stop()
        shutil.rmtree(d, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size-mb", type=int, default=256)
    ap.add_argument("--fleets", default="8,16,32")
    ap.add_argument("--skip", default="", help="comma list of: push,reflash,fleet")
    args = ap.parse_args()
    skip = set(args.skip.split(","))
    ansible = os.environ.get("ANSIBLE_PLAYBOOK") or shutil.which("ansible-playbook")
    report: dict = {}
    if "push" not in skip:
        report["push"] = push_bench(args.rounds, args.size_mb)
        print(json.dumps({"push": report["push"]}), flush=True)
    if "reflash" not in skip:
        report["reflash"] = reflash_bench()
        print(json.dumps({"reflash": report["reflash"]}), flush=True)
    if "fleet" not in skip:
        report["fleet"] = []
        for n in [int(x) for x in args.fleets.split(",") if x]:
            report["fleet"].append(fleet_bench(n, ansible))
            print(json.dumps({"fleet": report["fleet"][-1]}), flush=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
