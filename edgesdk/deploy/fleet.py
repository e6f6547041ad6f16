"""Fleets: an inventory (YAML, or Ansible's INI with groups), boards flashed in parallel, canaries first,
and an emergency stop when the failure rate passes --max-fail (hawkBit-style)."""

from __future__ import annotations

import shlex
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgesdk.boards import BoardProfile, get_board
from edgesdk.deploy.flash import (
    FlashOptions,
    board_engines,
    check_bundle,
    flash_bundle,
    resolve_bundle,
)
from edgesdk.deploy.results import FlashResult, Outcome
from edgesdk.deploy.transport import SSHTarget
from edgesdk.errors import InputError
from edgesdk.runtime.fallback import check_fallback


@dataclass(frozen=True)
class InventoryHost:
    name: str
    host: str
    port: int = 22
    user: str | None = None
    identity: str | None = None
    remote_dir: str | None = None
    fingerprint: str | None = None
    groups: tuple[str, ...] = ()

    def target(self, **defaults: Any) -> SSHTarget:
        kw = dict(defaults)
        if self.identity:
            kw["identity"] = Path(self.identity).expanduser()
        if self.remote_dir:
            kw["remote_dir"] = self.remote_dir
        if self.fingerprint:
            kw["fingerprint"] = self.fingerprint
        spec = f"{self.user + '@' if self.user else ''}{self.host}:{self.port}"
        return SSHTarget.parse(spec, **kw)


_VARS = {"ansible_host": "host", "ansible_port": "port", "ansible_user": "user",
         "ansible_ssh_private_key_file": "identity", "edgesdk_remote_dir": "remote_dir",
         "edgesdk_fingerprint": "fingerprint", "host": "host", "port": "port", "user": "user",
         "identity": "identity", "remote_dir": "remote_dir", "fingerprint": "fingerprint"}


def _host(name: str, vars_: dict[str, Any], groups: list[str], where: str) -> InventoryHost:
    kw: dict[str, Any] = {}
    for k, v in (vars_ or {}).items():
        if k in _VARS:
            kw[_VARS[k]] = v
    try:
        port = int(kw.pop("port", 22))
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: host {name}: bad port") from exc
    host = str(kw.pop("host", name))
    return InventoryHost(name=name, host=host, port=port, groups=tuple(groups),
                         **{k: str(v) for k, v in kw.items()})


def parse_inventory(path: str | Path, limit: str | None = None) -> list[InventoryHost]:
    """Hosts of a YAML inventory (a list, a {name: vars} map, or Ansible's all/hosts/children tree) or an
    Ansible INI inventory; `limit` keeps one group (or host name)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"--hosts {p}: no such inventory file")
    text = p.read_text(encoding="utf-8")
    hosts: dict[str, tuple[dict[str, Any], list[str]]] = {}
    if p.suffix in (".yaml", ".yml", ".json") or text.lstrip().startswith(("-", "{", "all:")):
        _parse_yaml(text, str(p), hosts)
    else:
        _parse_ini(text, str(p), hosts)
    out = [_host(n, v, g, str(p)) for n, (v, g) in hosts.items()]
    if limit:
        out = [h for h in out if limit in h.groups or h.name == limit]
        if not out:
            raise InputError(f"--limit {limit}: no such group or host in {p}")
    if not out:
        raise InputError(f"{p}: no hosts")
    return out


def _add(hosts: dict, name: str, vars_: dict[str, Any], group: str | None) -> None:
    v, g = hosts.setdefault(str(name), ({}, []))
    v.update(vars_ or {})
    if group and group not in g:
        g.append(group)


def _parse_yaml(text: str, where: str, hosts: dict) -> None:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"{where}: not valid YAML: {exc}") from exc
    if isinstance(data, list):
        for item in data:
            if isinstance(item, str):
                user, _, hp = item.rpartition("@")
                h, _, port = hp.partition(":")
                _add(hosts, item, {"host": h, "port": port or 22, **({"user": user} if user else {})}, None)
            elif isinstance(item, dict) and "host" in item:
                _add(hosts, item.get("name", item["host"]), item, None)
            else:
                raise InputError(f"{where}: list items must be 'user@host:port' or {{host: ...}}")
        return
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a list of hosts or an Ansible-style mapping")

    def walk(group: str, node: Any, inherited: dict[str, Any], parents: list[str]) -> None:
        node = node or {}
        gvars = {**inherited, **(node.get("vars") or {})}
        for name, hv in (node.get("hosts") or {}).items():
            _add(hosts, name, {**gvars, **(hv or {})}, group)
            for par in parents:
                _add(hosts, name, {}, par)
        for child, cnode in (node.get("children") or {}).items():
            walk(child, cnode, gvars, [*parents, group])

    if "all" in data or any(isinstance(v, dict) and ("hosts" in v or "children" in v) for v in data.values()):
        for group, node in data.items():
            walk(group, node, {}, [])
    else:  # {name: {host:, port:, ...}}
        for name, hv in data.items():
            _add(hosts, name, hv or {}, None)


def _parse_ini(text: str, where: str, hosts: dict) -> None:
    group, kind = "ungrouped", "hosts"
    gvars: dict[str, dict[str, Any]] = {}
    children: dict[str, list[str]] = {}
    members: dict[str, list[str]] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].split(";", 1)[0].strip() if not raw.strip().startswith(("#", ";")) else ""
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            name = line[1:-1]
            group, _, kind = name.partition(":")
            kind = kind or "hosts"
            if kind not in ("hosts", "vars", "children"):
                raise InputError(f"{where}:{n}: unknown section kind {kind!r}")
            continue
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise InputError(f"{where}:{n}: {exc}") from exc
        if kind == "vars":
            k, _, v = line.partition("=")
            gvars.setdefault(group, {})[k.strip()] = v.strip()
        elif kind == "children":
            children.setdefault(group, []).append(words[0])
        else:
            vars_ = {}
            for w in words[1:]:
                k, eq, v = w.partition("=")
                if not eq:
                    raise InputError(f"{where}:{n}: expected key=value, got {w!r}")
                vars_[k] = v
            _add(hosts, words[0], vars_, group)
            members.setdefault(group, []).append(words[0])

    def expand(g: str, seen: set[str]) -> list[str]:
        if g in seen:
            return []
        seen.add(g)
        out = list(members.get(g, []))
        for c in children.get(g, []):
            out += expand(c, seen)
        return out

    for g in set(children) | set(gvars):
        for h in expand(g, set()):
            v, gs = hosts[h]
            for k, val in gvars.get(g, {}).items():
                v.setdefault(k, val)
            if g not in gs:
                gs.append(g)


@dataclass(frozen=True)
class FleetResult:
    """Every board's FlashResult, in the order they finished; the boards not started and why."""

    results: tuple[FlashResult, ...] = ()
    skipped: tuple[str, ...] = ()
    stopped: str | None = None
    seconds: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "results", tuple(self.results))
        object.__setattr__(self, "skipped", tuple(self.skipped))

    @property
    def ok(self) -> bool:
        return not self.skipped and all(r.ok for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        by: dict[str, int] = {}
        for r in self.results:
            by[r.status.value] = by.get(r.status.value, 0) + 1
        return {"boards": len(self.results) + len(self.skipped), "by_status": by, "skipped": list(self.skipped),
                "stopped": self.stopped, "seconds": round(self.seconds, 3)}


def parse_max_fail(text: str | float) -> float:
    s = str(text).strip()
    try:
        v = float(s[:-1]) / 100 if s.endswith("%") else float(s)
    except ValueError as exc:
        raise InputError(f"--max-fail {text!r}: expected a fraction (0.2) or a percentage (20%)") from exc
    if not 0 <= v <= 1:
        raise InputError(f"--max-fail {text!r}: must be between 0 and 1 (or 0% and 100%)")
    return v


def deploy_fleet(model_or_bundle: str | Path, board: str | BoardProfile, hosts: list[InventoryHost],
                 options: FlashOptions | None = None, *, parallel: int = 8, canary: int = 0, max_fail: float = 0.0,
                 retries: int = 2, target_defaults: dict[str, Any] | None = None,
                 on_result: Callable[[FlashResult], None] | None = None,
                 transport: Callable[[SSHTarget], Any] | None = None) -> FleetResult:
    """Flash every host: `canary` boards first (all must finish), then the rest `parallel` at a time;
    no further board starts once failures / finished boards exceeds `max_fail`."""
    if parallel < 1 or canary < 0:
        raise InputError("--parallel must be >= 1 and --canary >= 0")
    prof = board if isinstance(board, BoardProfile) else get_board(board)
    opts = options or FlashOptions()
    check_fallback(opts.fallback, "--fallback")
    bundle, _ = resolve_bundle(model_or_bundle, prof.id, input_shapes=opts.input_shapes,
                               trust_model=opts.trust_model)
    manifest, files = check_bundle(bundle)
    if manifest.board != prof.id and not opts.force:
        raise InputError(f"{bundle} was converted for {manifest.board}, not {prof.id}")
    if opts.provision and opts.python is None and opts.wheelhouse is None:
        from edgesdk.deploy.wheelhouse import build_wheelhouse

        # --fallback cpu: one wheel set for every board, with the CPU versions' engines (the accelerator's own
        # runtime usually comes from the board image, not PyPI)
        engines = board_engines(manifest, opts.fallback, accelerator=opts.fallback != "cpu")
        opts = replace(opts, wheelhouse=build_wheelhouse(prof, engines))
    targets = [(h, h.target(**(target_defaults or {}))) for h in hosts]  # bad settings fail before any board
    results: list[FlashResult] = []
    skipped: list[str] = []
    stopped: list[str] = []  # the emergency stop's reason, once set
    lock = threading.Lock()
    t0 = time.perf_counter()

    def one(h: InventoryHost, t: SSHTarget) -> FlashResult:
        for attempt in range(retries + 1):
            r = flash_bundle(bundle, manifest, files, prof, t, opts, lambda e: None, transport=transport)
            if r.status is not Outcome.UNREACHABLE or attempt == retries:
                break
            time.sleep(0.5 * 2 ** attempt)
        r = replace(r, host=h.name if h.name == t.known_hosts_name else f"{h.name} ({t.known_hosts_name})")
        with lock:
            results.append(r)
            if on_result:
                on_result(r)
        return r

    def rate() -> float:
        done = len(results)
        return sum(not r.ok for r in results) / done if done else 0.0

    waves = [targets[:canary], targets[canary:]] if canary else [targets]
    for wi, wave in enumerate(waves):
        if stopped:
            skipped.extend(h.name for h, _ in wave)
            continue
        with ThreadPoolExecutor(max_workers=min(parallel, max(1, len(wave)))) as pool:
            futs = []
            for h, t in wave:
                def job(h: InventoryHost = h, t: SSHTarget = t) -> FlashResult | None:
                    with lock:
                        if stopped or (results and rate() > max_fail):
                            if not stopped:
                                stopped.append(f"failure rate {rate():.0%} > --max-fail {max_fail:.0%}")
                            skipped.append(h.name)
                            return None
                    return one(h, t)
                futs.append(pool.submit(job))
            for f in futs:
                f.result()
        if wi == 0 and canary and not stopped and rate() > max_fail:
            stopped.append(f"canary wave: failure rate {rate():.0%} > --max-fail {max_fail:.0%}")
    return FleetResult(tuple(results), tuple(skipped), stopped[0] if stopped else None, time.perf_counter() - t0)
