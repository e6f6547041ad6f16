"""Run a cross-built program on the board over SSH: push into a temp dir, run, bring back output, clean up."""

from __future__ import annotations

import posixpath
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgesdk.boards import BoardProfile
from edgesdk.cross.build import Artifact, BuildResult
from edgesdk.deploy.transport import SSHConnection, SSHTarget
from edgesdk.errors import InputError, RemoteError

Progress = Callable[[str], None] | None
REMOTE_TEMPLATE = "/tmp/edgesdk-cross-XXXXXXXX"
#: cd into the run dir, put its library dirs first on LD_LIBRARY_PATH, exec the program. POSIX sh
#: (busybox too); the paths and the program's arguments arrive as positional parameters, never parsed.
_LAUNCH = 'cd "$1" || exit 127; LD_LIBRARY_PATH="$2${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; export LD_LIBRARY_PATH; shift 2; exec "$@"'


@dataclass(frozen=True)
class RunResult:
    """What the program did on the board."""

    board: str
    host: str
    emulated: bool
    program: str
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    fetched: list[str] = field(default_factory=list)
    note: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def emulated_target(board: BoardProfile, progress: Progress = None) -> SSHTarget:
    """Start the board's emulator (a no-op when it runs) and return its SSH target."""
    from edgesdk import emulator

    if progress:
        progress(f"no --host: running on the emulated {board.id} (starting it if needed)")
    info = emulator.start(board, progress=progress)
    return SSHTarget(host=info.host or "127.0.0.1", port=info.port or 22, user=info.user or "root",
                     identity=Path(info.key_path or ""), known_hosts=Path(info.known_hosts or ""))


def pick_program(result: BuildResult, name: str | None) -> Artifact:
    exes = result.executables
    if name:
        for a in exes:
            if a.name == name or Path(a.name).name == name:
                return a
        raise InputError(f"--exe {name!r} is not among the built programs: {[a.name for a in exes] or 'none'}")
    if len(exes) == 1:
        return exes[0]
    if not exes:
        raise InputError("the build produced no executable to --run")
    raise InputError(f"the build produced several programs; choose one with --exe: {[a.name for a in exes]}")


def run_on_board(
    result: BuildResult,
    board: BoardProfile,
    *,
    target: SSHTarget | None = None,
    exe: str | None = None,
    args: Sequence[str] = (),
    push: Sequence[str | Path] = (),
    fetch: Sequence[str] = (),
    fetch_dir: str | Path | None = None,
    timeout: float = 300.0,
    progress: Progress = None,
) -> RunResult:
    """Push the build's programs and libraries (and `push` files) to a fresh temp dir on the board, run
    `exe` there with `args`, copy `fetch` files (relative to that dir) back into `fetch_dir`, remove the dir.

    Without `target`, the board's emulator is started and used. A non-zero exit is a result, not an error.
    """
    program = pick_program(result, exe)
    for p in push:
        if not Path(p).is_file():
            raise InputError(f"--push {p}: not a file")
    for f in fetch:
        if f.startswith("/") or ".." in Path(f).parts:
            raise InputError(f"--fetch {f!r} must be a path inside the run directory")
    emulated = target is None
    tgt = target or emulated_target(board, progress)
    out_dir = Path(fetch_dir) if fetch_dir else Path(result.plan.out_dir) / "run"
    with SSHConnection(tgt) as conn:
        rdir = conn.run(["mktemp", "-d", REMOTE_TEMPLATE], timeout=30).stdout.strip()
        if not rdir.startswith("/tmp/edgesdk-cross-"):
            raise RemoteError(f"mktemp on the board returned {rdir!r}")
        try:
            if progress:
                progress(f"pushing {len(result.artifacts) + len(push)} file(s) to {tgt.known_hosts_name}:{rdir}")
            lib_dirs: list[str] = []
            for a in result.artifacts:
                dest = posixpath.join(rdir, Path(a.name).as_posix())
                ddir = posixpath.dirname(dest)
                if ddir != rdir:
                    conn.run(["mkdir", "-p", ddir], timeout=30)
                conn.put(a.path, dest, mode=0o755)
                if a.kind == "shared-library" and ddir not in lib_dirs:
                    lib_dirs.append(ddir)
            for p in push:
                conn.put(p, posixpath.join(rdir, Path(p).name), mode=0o644)
            prog = posixpath.join(rdir, Path(program.name).as_posix())
            argv = [prog, *args]
            if progress:
                progress(f"running {program.name} {' '.join(args)}".rstrip())
            t0 = time.monotonic()
            res = conn.run(["sh", "-c", _LAUNCH, "sh", rdir, ":".join(lib_dirs) or rdir, *argv],
                           timeout=timeout, check=False)
            seconds = time.monotonic() - t0
            fetched = []
            for f in fetch:
                local = out_dir / f
                conn.get(posixpath.join(rdir, f), local)
                fetched.append(str(local))
        finally:
            try:
                conn.run(["rm", "-rf", rdir], timeout=60, check=False)
            except RemoteError:
                pass  # the board went away; the temp dir is in /tmp and harmless
    return RunResult(
        board=board.id,
        host=f"{tgt.user}@{tgt.known_hosts_name}",
        emulated=emulated,
        program=program.name,
        argv=[Path(program.name).as_posix(), *args],
        returncode=res.returncode,
        stdout=res.stdout,
        stderr=res.stderr,
        seconds=seconds,
        fetched=fetched,
        note=f"emulated {board.id} (qemu-user): timings are not the board's" if emulated else None,
    )


__all__ = ["RunResult", "emulated_target", "pick_program", "run_on_board"]
