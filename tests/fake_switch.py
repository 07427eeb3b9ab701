"""A fake OpenFlow 1.3 switch for the security tests: it claims a datapath id over plain TCP or TLS (with or
without a client certificate) and records every message the controller sends it."""

from __future__ import annotations

import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass, field

from controller.pki import TlsFiles

OFP_VERSION = 4
HELLO, ERROR, ECHO_REQUEST, ECHO_REPLY, EXPERIMENTER = 0, 1, 2, 3, 4
FEATURES_REQUEST, FEATURES_REPLY = 5, 6
PACKET_OUT, FLOW_MOD, GROUP_MOD = 13, 14, 15
MULTIPART_REQUEST, MULTIPART_REPLY = 18, 19
BARRIER_REQUEST, BARRIER_REPLY = 20, 21
METER_MOD = 29
PORT_DESC = 13
#: what would program the switch (flows, groups, meters, bundles: an ONF experimenter message in 1.3)
PROGRAMMING = {FLOW_MOD, GROUP_MOD, METER_MOD, EXPERIMENTER, PACKET_OUT}
HEADER = struct.Struct("!BBHI")


@dataclass
class FakeResult:
    received: list[int] = field(default_factory=list)  # message types, in order
    connected: bool = False  # the TCP (and TLS, if asked) connection came up
    features_sent: bool = False  # it claimed the datapath id
    closed_by_peer: bool = False
    error: str = ""

    @property
    def programmed(self) -> list[int]:
        return [t for t in self.received if t in PROGRAMMING]


def _msg(msg_type: int, xid: int, body: bytes = b"") -> bytes:
    return HEADER.pack(OFP_VERSION, msg_type, HEADER.size + len(body), xid) + body


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def run_fake_switch(
    host: str, port: int, dpid: int, tls: TlsFiles | None = None, ca: str | None = None, duration: float = 8.0
) -> FakeResult:
    """Connect to host:port (TLS when `ca` is given, presenting `tls` if given), claim `dpid`, answer what a
    switch answers (echo, port description, barrier) for up to `duration` seconds or until the controller
    closes the connection."""
    res = FakeResult()
    deadline = time.monotonic() + duration
    try:
        raw = socket.create_connection((host, port), timeout=5)
    except OSError as e:
        res.error = f"connect: {e}"
        return res
    sock: socket.socket = raw
    try:
        if ca is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.load_verify_locations(ca)
            if tls is not None:
                ctx.load_cert_chain(str(tls.cert), str(tls.key))
            sock = ctx.wrap_socket(raw)
        res.connected = True
        sock.sendall(_msg(HELLO, 1))
        while time.monotonic() < deadline:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                _version, msg_type, length, xid = HEADER.unpack(_recv_exact(sock, HEADER.size))
                body = _recv_exact(sock, length - HEADER.size)
            except (EOFError, ConnectionError):
                res.closed_by_peer = True
                break
            except ssl.SSLError as e:  # an alert from the controller: it refused us
                res.closed_by_peer = True
                res.error = f"TLS: {e}"
                break
            res.received.append(msg_type)
            if msg_type == FEATURES_REQUEST:
                sock.sendall(_msg(FEATURES_REPLY, xid, struct.pack("!QIBB2xII", dpid, 0, 254, 0, 0x4F, 0)))
                res.features_sent = True
            elif msg_type == ECHO_REQUEST:
                sock.sendall(_msg(ECHO_REPLY, xid, body))
            elif msg_type == MULTIPART_REQUEST and struct.unpack("!H", body[:2])[0] == PORT_DESC:
                sock.sendall(_msg(MULTIPART_REPLY, xid, struct.pack("!HH4x", PORT_DESC, 0)))
            elif msg_type == BARRIER_REQUEST:
                sock.sendall(_msg(BARRIER_REPLY, xid))
    except TimeoutError:
        pass
    except (OSError, ssl.SSLError) as e:
        res.closed_by_peer = True
        res.error = str(e)
    finally:
        sock.close()
    return res


class FakeSwitchThread(threading.Thread):
    """run_fake_switch in the background, again and again until stopped (a switch retries its connection)."""

    def __init__(
        self, name: str, host: str, port: int, dpid: int, tls: TlsFiles | None = None, ca: str | None = None
    ) -> None:
        super().__init__(name=f"fake-{name}", daemon=True)
        self.args = (host, port, dpid, tls, ca)
        self.results: list[FakeResult] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.results.append(run_fake_switch(*self.args, duration=3.0))
            self._stop_event.wait(0.3)

    def stop(self) -> list[FakeResult]:
        self._stop_event.set()
        self.join(timeout=15)
        return self.results
