"""A link that dies before the SSH banner (a cut or stalled board, the lock-release reconnect after one) is a clean
ConnectError, and paramiko's transport thread prints no traceback on the user's terminal (it logs one at ERROR, and
with no handler Python's last-resort handler would print it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROGRAM = r'''
import socket, threading
from edgesdk.deploy.transport import SSHConnection, SSHTarget
from edgesdk.errors import EdgeSDKError

srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(5)

def serve():
    while True:
        c, _ = srv.accept()
        c.close()  # accept, then close before any banner

threading.Thread(target=serve, daemon=True).start()
t = SSHTarget.parse(f"root@127.0.0.1:{srv.getsockname()[1]}", accept_new=True)
try:
    with SSHConnection(t) as c:
        c.connect()
except EdgeSDKError as e:
    print("clean:", type(e).__name__)
'''


def test_a_link_that_dies_before_the_banner_prints_no_traceback(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert r.stdout.strip() == "clean: ConnectError", (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "Exception (client)" not in r.stderr, r.stderr
