"""Pushing files to the board over SFTP: pipelined large writes, resume from the .part offset, files the
board already has (same sha256) are not sent, and every file's sha256 is checked on the board."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgesdk.deploy.board import RemoteBoard
from edgesdk.errors import InputError, RemoteError
from edgesdk.runtime.manifest import sha256_file  # the host's one sha256 of a file (re-exported here)

#: One SFTP write request. OpenSSH's sftp-server takes messages up to 256 KiB; fewer, larger
#: requests cut paramiko's per-request Python cost (see docs/benchmarks.md, Flash).
CHUNK = 255 * 1024
#: Requests in flight before we wait for the oldest answer (OpenSSH's sftp keeps 64).
IN_FLIGHT = 64

Progress = Callable[[int], None]


@dataclass(frozen=True)
class LocalFile:
    path: Path
    sha256: str
    size: int


@dataclass
class TransferStats:
    bytes_sent: int = 0
    bytes_total: int = 0
    files_sent: int = 0
    files_skipped: int = 0
    resumed_bytes: int = 0
    resent_files: int = 0
    seconds: float = 0.0
    already_installed: bool = False
    retries: int = 0
    details: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"bytes_sent": self.bytes_sent, "bytes_total": self.bytes_total, "files_sent": self.files_sent,
                "files_skipped": self.files_skipped, "resumed_bytes": self.resumed_bytes,
                "resent_files": self.resent_files, "seconds": round(self.seconds, 3),
                "already_installed": self.already_installed,
                "mb_per_s": round(self.bytes_sent / self.seconds / 1e6, 1) if self.seconds > 0 else None}


def local_tree(root: Path) -> dict[str, LocalFile]:
    """Every regular file under root by its relative POSIX path; links and special files are refused."""
    root = Path(root)
    out: dict[str, LocalFile] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            raise InputError(f"{p}: links are not allowed in a bundle")
        if p.is_dir():
            continue
        if not p.is_file():
            raise InputError(f"{p}: not a regular file")
        out[rel] = LocalFile(p, sha256_file(p), p.stat().st_size)
    return out


def upload(sftp: Any, local: Path, remote: str, offset: int, progress: Progress | None = None,
           limit: int | None = None) -> int:
    """Write local[offset:] into remote at offset with up to IN_FLIGHT large requests in flight; the
    number of bytes written. `limit` stops early (tests of a cut connection). A file session with its own
    writer (FakeTransport's `write_from`) does the job itself."""
    own = getattr(sftp, "write_from", None)
    if own is not None:
        return own(local, remote, offset, progress, limit)
    from paramiko.sftp import CMD_WRITE, int64

    fh = sftp.open(remote, "r+" if offset else "w")
    sent = 0
    try:
        pending: list[int] = []
        with open(local, "rb") as src:
            src.seek(offset)
            pos = offset
            while True:
                data = src.read(CHUNK)
                if not data:
                    break
                pending.append(sftp._async_request(type(None), CMD_WRITE, fh.handle, int64(pos), data))
                pos += len(data)
                sent += len(data)
                if len(pending) >= IN_FLIGHT:
                    sftp._read_response(pending.pop(0))
                if progress:
                    progress(len(data))
                if limit is not None and sent >= limit:
                    break
            for req in pending:
                sftp._read_response(req)
    except BaseException:
        try:
            fh.close()
        except Exception:  # noqa: BLE001 - the first error is the one to report
            pass
        raise
    fh.close()
    return sent


def push(rb: RemoteBoard, area: str, files: dict[str, LocalFile], progress: Callable[[int, int], None] | None = None,
         ) -> TransferStats:
    """Make `area` on the board (staging/<bundle-id> or wheels) hold `files`, verified by sha256.

    progress(done, total) is called as bytes go out. A file that fails its check on the board is
    deleted there and sent again once; a second failure is an error.
    """
    t0 = time.perf_counter()
    st = TransferStats(bytes_total=sum(f.size for f in files.values()))
    listing = {rel: {"sha256": f.sha256, "size": f.size} for rel, f in files.items()}
    for attempt in range(2):
        need = rb.call("need", area, rb.token, stdin={"files": listing}, timeout=600)
        if need.get("installed"):
            st.already_installed = True
            st.files_skipped = len(files)
            break
        todo = {rel: v["offset"] for rel, v in need["files"].items() if v["status"] == "send"}
        if attempt == 0:
            st.files_skipped = len(files) - len(todo)
            st.resumed_bytes = sum(todo.values())
        remaining = sum(files[r].size - off for r, off in todo.items())
        done = 0
        if progress:
            progress(0, remaining)
        if todo:
            at: dict[str, Any] = {}  # the file being sent, for the error of a cut or stalled link
            try:
                with rb.conn.sftp(f"push to {rb.base}/{area}") as sftp:
                    for rel, off in sorted(todo.items()):
                        rb.fail_point("before_upload", rel=rel)
                        at.update(rel=rel, off=off, sent=0)

                        def tick(n: int) -> None:
                            nonlocal done
                            done += n
                            at["sent"] += n
                            st.bytes_sent += n
                            if progress:
                                progress(done, remaining)

                        upload(sftp, files[rel].path, f"{rb.base}/{area}/{rel}.part", off, tick)
                        st.files_sent += 1
                        at.clear()
            except RemoteError as exc:
                if at:  # say where: the file and how far it got (a rerun resumes from what the board has)
                    rel, off = at["rel"], at["off"]
                    exc.args = (f"{exc.args[0] if exc.args else exc} (while sending {rel}: "
                                f"{off + at['sent']:,} of {files[rel].size:,} bytes sent"
                                + (f", resumed at {off:,}" if off else "")
                                + f"; what arrived stays in {area}/{rel}.part for a rerun)", *exc.args[1:])
                raise
        rb.fail_point("after_upload", area=area)
        res = rb.call("commit", area, rb.token, stdin={"files": listing}, timeout=1800)
        if res["verified"]:
            break
        st.details.append(f"sha256 mismatch on the board, sent again: {sorted(res['bad'])}")
        st.resent_files += len(res["bad"])
        if attempt == 1:
            raise RemoteError(f"{rb.conn.target.known_hosts_name}: files still differ after a resend: {res['bad']}")
    st.seconds = time.perf_counter() - t0
    return st
