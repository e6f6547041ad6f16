"""Deploy units without SSH: the agent's verbs on a local dir, inventories, probe comparison, bundle checks."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import pytest

from edgesdk.deploy import agent
from edgesdk.deploy.fleet import parse_inventory, parse_max_fail
from edgesdk.deploy.probe import compare
from edgesdk.errors import InputError


def run_agent(base: Path, *argv: str, stdin: dict | None = None, monkeypatch=None, capsys=None) -> tuple[int, dict]:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(json.dumps(stdin or {}).encode())))
    rc = agent.main(["--base", str(base), *argv])
    return rc, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.parametrize("rel", ["../x", "/etc/passwd", "a/../../b", "a\\b", "a\nb", "", "x.part", "a//b", "./a"])
def test_agent_refuses_paths_escaping_the_bundle(rel):
    with pytest.raises(agent.Fail):
        agent.check_rel(rel)


def test_agent_accepts_odd_but_inert_names():
    assert agent.check_rel("a;b $(id) `x`.bin") == "a;b $(id) `x`.bin"


def test_agent_lock_need_commit_and_atomic_switch(tmp_path, monkeypatch, capsys):
    base = tmp_path / "b"
    rc, r = run_agent(base, "lock", "acquire", "t" * 16, monkeypatch=monkeypatch, capsys=capsys)
    assert rc == 0 and r["locked"]
    rc, r = run_agent(base, "lock", "acquire", "u" * 16, monkeypatch=monkeypatch, capsys=capsys)
    assert rc == agent.EXIT_LOCKED and "locked by another flash" in r["error"]
    import hashlib

    data = b"hello"
    sha = hashlib.sha256(data).hexdigest()
    files = {"files": {"m.bin": {"sha256": sha, "size": 5}}}
    rc, r = run_agent(base, "need", "staging/bx", "t" * 16, stdin=files, monkeypatch=monkeypatch, capsys=capsys)
    assert r["files"]["m.bin"] == {"status": "send", "offset": 0}
    assert (base / "staging" / "bx").stat().st_mode & 0o777 == 0o700
    (base / "staging" / "bx" / "m.bin.part").write_bytes(b"hel")
    rc, r = run_agent(base, "need", "staging/bx", "t" * 16, stdin=files, monkeypatch=monkeypatch, capsys=capsys)
    assert r["files"]["m.bin"]["offset"] == 3  # resume
    (base / "staging" / "bx" / "m.bin.part").write_bytes(b"hellO")
    rc, r = run_agent(base, "commit", "staging/bx", "t" * 16, stdin=files, monkeypatch=monkeypatch, capsys=capsys)
    assert not r["verified"] and "m.bin" in r["bad"] and not (base / "staging" / "bx" / "m.bin.part").exists()
    rc, r = run_agent(base, "need", "staging/../../etc", "t" * 16, stdin=files, monkeypatch=monkeypatch, capsys=capsys)
    assert rc == agent.EXIT_INPUT
    b = agent.Board(str(base))
    (base / "releases" / "r1").mkdir(parents=True)
    (base / "releases" / "r2").mkdir(parents=True)
    b.switch("r1")
    b.switch("r2")
    assert os.readlink(base / "current") == "releases/r2" and not (base / "current.tmp").exists()


def test_agent_disk_check(tmp_path, monkeypatch, capsys):
    base = tmp_path / "b"
    run_agent(base, "lock", "acquire", "t" * 16, monkeypatch=monkeypatch, capsys=capsys)
    monkeypatch.setattr(agent, "free_bytes", lambda p: 1000)
    files = {"files": {"big": {"sha256": "0" * 64, "size": 10 << 20}}}
    rc, r = run_agent(base, "need", "staging/bx", "t" * 16, stdin=files, monkeypatch=monkeypatch, capsys=capsys)
    assert rc == agent.EXIT_NOSPACE and "no space" in r["error"]


def test_inventory_ini_with_groups(tmp_path):
    p = tmp_path / "hosts.ini"
    p.write_text("""# fleet
[canary]
pi1 ansible_host=10.0.0.1 ansible_user=pi
[rest]
pi2 ansible_host=10.0.0.2 ansible_port=2222
pi3
[all_pis:children]
canary
rest
[all_pis:vars]
ansible_user=admin
ansible_ssh_private_key_file=~/.ssh/fleet
""")
    hs = {h.name: h for h in parse_inventory(p)}
    assert hs["pi1"].user == "pi" and hs["pi2"].user == "admin" and hs["pi2"].port == 2222
    assert hs["pi3"].host == "pi3" and "all_pis" in hs["pi3"].groups and hs["pi3"].identity == "~/.ssh/fleet"
    assert [h.name for h in parse_inventory(p, limit="rest")] == ["pi2", "pi3"]
    with pytest.raises(InputError, match="no such group"):
        parse_inventory(p, limit="nope")


def test_inventory_yaml_forms(tmp_path):
    p = tmp_path / "a.yaml"
    p.write_text("all:\n  children:\n    pis:\n      vars: {ansible_user: pi}\n      hosts:\n"
                 "        a: {ansible_host: 10.0.0.5, ansible_port: 22}\n        b: {ansible_host: 10.0.0.6}\n")
    hs = parse_inventory(p)
    assert [(h.name, h.host, h.user) for h in hs] == [("a", "10.0.0.5", "pi"), ("b", "10.0.0.6", "pi")]
    q = tmp_path / "b.yaml"
    q.write_text("- root@127.0.0.1:2200\n- {host: 10.1.1.1, user: pi}\n")
    hs = parse_inventory(q)
    assert hs[0].port == 2200 and hs[0].user == "root" and hs[1].user == "pi"


def test_max_fail_parsing():
    assert parse_max_fail("20%") == 0.2 and parse_max_fail("0.5") == 0.5
    with pytest.raises(InputError):
        parse_max_fail("150%")


def test_probe_compare_names_expected_and_found():
    from edgesdk.boards import get_board

    prof = get_board("rpi4")
    facts = {"machine": "x86_64", "python": "3.9.2", "libc": "glibc 2.31", "device_tree_model": "Some PC",
             "free_bytes": 1 << 30, "ram_bytes": 4 << 30, "dev_nodes": {"/dev/vchiq": False}, "tools": {}}
    problems, warnings = compare(prof, facts)
    text = "\n".join(problems)
    assert "expected aarch64, found x86_64" in text and "expected 3.11" in text and "glibc" in text
    assert "Raspberry Pi 4 Model B" in text
    ok = {"machine": "aarch64", "python": "3.11.2", "libc": "glibc 2.36", "free_bytes": 1 << 30,
          "device_tree_model": "Raspberry Pi 4 Model B Rev 1.4", "emulated": {"emulated": True},
          "dev_nodes": {"/dev/vchiq": False}, "tools": {"vcgencmd": None}}
    problems, warnings = compare(prof, ok)
    assert problems == [] and any("EMULATED" in w for w in warnings)


def test_transport_refuses_bad_remote_dir():
    from edgesdk.deploy.transport import SSHTarget

    for bad in ("relative", "/x\nrm -rf /", "/x\0"):
        with pytest.raises(InputError):
            SSHTarget(host="h", remote_dir=bad)
    assert SSHTarget(host="h", remote_dir="/opt/a;b $(id)").remote_dir == "/opt/a;b $(id)"


def test_agent_is_stdlib_only():
    src = Path(agent.__file__).read_text()
    import ast

    mods = {n.names[0].name.split(".")[0] for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Import)}
    mods |= {n.module.split(".")[0] for n in ast.walk(ast.parse(src)) if isinstance(n, ast.ImportFrom) and n.module}
    assert mods <= set(sys.stdlib_module_names) | {"__future__"}, mods
    assert "shell=True" not in src


def test_the_probe_checks_sysfs_device_paths_too(tmp_path, monkeypatch):
    """x3's BPU is /sys/devices/system/bpu/bpu0 (no /dev node): the agent answers for /sys paths, not for others."""
    from edgesdk.boards import get_board
    from edgesdk.runtime import agent

    nodes = list(get_board("x3").detect.dev_nodes)
    assert any(n.startswith("/sys/") for n in nodes)
    monkeypatch.setattr(agent, "read_stdin", lambda: {"dev_nodes": [*nodes, "/dev/null", "/etc/passwd",
                                                                      "/sys/../etc/passwd"]})
    res = agent.verb_probe(agent.Board(str(tmp_path)), None)
    assert set(res["dev_nodes"]) == {*nodes, "/dev/null"} and res["dev_nodes"]["/dev/null"] is True
