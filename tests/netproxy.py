"""A loopback TCP proxy between the host and a test sshd, for link faults: a cut or a stall.

    proxy = LinkProxy(board.port, cut_after=6 << 20)     # cuts every connection after 6 MB host -> board
    proxy = LinkProxy(board.port, cut_after=2 << 20, heal_after_cut=True)  # one cut (a blip), then a good link
    proxy = LinkProxy(board.port, rate=1 << 20)          # a slow link: at most 1 MB/s each way, per connection
    proxy = LinkProxy(board.port, stall_after=2 << 20)   # stops forwarding after 2 MB, closes nothing
    proxy.stall() / proxy.heal()                         # at once, e.g. from a fail point

A cut closes both sockets (what toxiproxy's `limit_data` does). A stall keeps every connection open and forwards
nothing more, in either direction, on the open connections and on new ones, until `heal()`:
- mode "hold": the proxy stops reading, so the sockets' buffers fill and the sender's writes block (a black-holed
  route: iptables DROP, a dead Wi-Fi link);
- mode "drop": the proxy keeps reading and throws the bytes away (toxiproxy's `timeout` toxic with timeout=0).
Byte counts are client -> server bytes over all connections since the proxy started. Listens on 127.0.0.1 only.
A rate limit paces each direction of each connection (a token bucket of 64 KiB): the sender's socket buffers fill
and its writes block, as on a slow radio link, while the bytes keep flowing.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Self

MODES = ("hold", "drop")
#: the rate limit's burst: bytes a paced connection may send at once after a pause
BURST = 64 << 10


class LinkProxy:
    def __init__(self, dest_port: int, *, cut_after: int | None = None, stall_after: int | None = None,
                 mode: str = "hold", heal_after_cut: bool = False, rate: float | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be > 0 bytes/s, got {rate}")
        self.dest_port = dest_port
        self.heal_after_cut = heal_after_cut
        self.rate = rate
        self.cut_after = cut_after
        self.stall_after = stall_after
        self.mode = mode
        self.sent = 0  # client -> server bytes forwarded
        self.cuts = 0
        self.stalls = 0
        self.dropped = 0
        #: time.monotonic() of the last stall (None: never stalled)
        self.stalled_at: float | None = None
        self._flowing = threading.Event()
        self._flowing.set()
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._srv = socket.socket()
        self._srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._srv.bind(("127.0.0.1", 0))
        self._srv.listen(16)
        self.port = self._srv.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name=f"proxy-{self.port}").start()

    # the old CutProxy name for cut_after (set it to None to heal the link)
    @property
    def limit(self) -> int | None:
        return self.cut_after

    @limit.setter
    def limit(self, value: int | None) -> None:
        self.cut_after = value

    @property
    def stalled(self) -> bool:
        return not self._flowing.is_set()

    def stall(self) -> None:
        """Stop forwarding now, both ways, without closing any connection."""
        with self._lock:
            if self._flowing.is_set():
                self.stalls += 1
                self.stalled_at = time.monotonic()
                self._flowing.clear()

    def heal(self) -> None:
        """Forward again (held bytes go on; in "drop" mode the dropped ones are lost, so old SSH sessions die)."""
        self.stall_after = None
        self._flowing.set()

    def close(self) -> None:
        self._closed = True
        self._flowing.set()  # wake the pumps so that they see the closed sockets
        try:
            self._srv.close()
        except OSError:
            pass
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            _close(s)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._closed:
            try:
                c, _ = self._srv.accept()
            except OSError:
                return
            try:
                s = socket.create_connection(("127.0.0.1", self.dest_port))
            except OSError:
                c.close()
                continue
            with self._lock:
                self._socks += [c, s]
            threading.Thread(target=self._pump, args=(c, s, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(s, c, False), daemon=True).start()

    def _wait_flowing(self) -> bool:
        """Block while stalled ("hold"); False once the proxy is closed."""
        while not self._flowing.wait(0.2):
            if self._closed:
                return False
        return not self._closed

    def _paced(self, b: socket.socket, data: bytes, bucket: list[float]) -> None:
        """Send data at self.rate bytes/s: bucket = [tokens, time of the last refill], at most BURST tokens."""
        view = memoryview(data)
        while view:
            now = time.monotonic()
            bucket[0] = min(BURST, bucket[0] + (now - bucket[1]) * self.rate)
            bucket[1] = now
            if bucket[0] < 1:
                time.sleep(min(0.05, (1 - bucket[0]) / self.rate + 0.001))
                continue
            n = min(len(view), int(bucket[0]))
            b.sendall(view[:n])
            bucket[0] -= n
            view = view[n:]

    def _pump(self, a: socket.socket, b: socket.socket, upstream: bool) -> None:
        bucket = [0.0, time.monotonic()]
        try:
            while True:
                if self.mode == "hold" and not self._wait_flowing():
                    break
                data = a.recv(1 << 16)
                if not data:
                    break
                if self.mode == "drop" and self.stalled:
                    self.dropped += len(data)
                    continue
                if upstream:
                    with self._lock:
                        room_cut = None if self.cut_after is None else self.cut_after - self.sent
                        room_stall = None if self.stall_after is None else self.stall_after - self.sent
                        n = len(data)
                        for room in (room_cut, room_stall):
                            if room is not None:
                                n = min(n, max(room, 0))
                        self.sent += n
                    if room_cut is not None and room_cut < len(data):
                        b.sendall(data[:n])
                        with self._lock:
                            self.cuts += 1
                            if self.heal_after_cut:
                                self.cut_after = None  # this connection dies; the next one gets through
                        break
                    if room_stall is not None and room_stall < len(data):
                        b.sendall(data[:n])
                        self.stall()
                        data = data[n:]
                        if self.mode == "drop":
                            self.dropped += len(data)
                            continue
                        if not self._wait_flowing():  # hold the rest until healed
                            break
                if self.mode == "hold" and not self._wait_flowing():
                    break
                if self.rate is not None:
                    self._paced(b, data, bucket)
                else:
                    b.sendall(data)
        except OSError:
            pass
        finally:
            _close(a)
            _close(b)


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass
