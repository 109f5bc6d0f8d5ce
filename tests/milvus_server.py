"""A real Milvus 2.3.5 standalone server (the PyPI package `milvus`, embedded etcd) for the
vector-backend tests, reachable only on loopback.

Milvus 2.3.5 binds its gRPC and metrics ports on every interface whatever its `*.ip` settings
say (those only choose the address it advertises), so it runs in a network namespace of its
own (`unshare --net`: only a loopback device, nothing outside can reach it) and this process
forwards one port of the host's 127.0.0.1 to its proxy. The binaries (246 MB unpacked, about
7 s to unpack) are kept in ~/.cache/facesearch and reused.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

from milvus import MilvusServerConfig, __version__, _initialize_data_files

CACHE = Path.home() / ".cache" / "facesearch" / f"milvus-{__version__}"
COMPONENTS = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexCoord", "indexNode",
              "dataCoord", "dataNode")
METRICS_PORT = 9091  # inside the namespace: /healthz, and the metrics nobody outside sees
CLONE_NEWNET = 0x40000000


def namespaces_available() -> str | None:
    """None if this process may start a program in a new network namespace, else why not."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare or ip (util-linux, iproute2) not installed"
    probe = subprocess.run(["unshare", "--net", "true"], check=False, capture_output=True, text=True)
    return None if probe.returncode == 0 else f"unshare --net refused: {probe.stderr.strip()}"


class LoopbackMilvus:
    """A Milvus standalone server in its own network namespace; `uri` reaches its proxy
    through a forwarder on the host's 127.0.0.1."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.process: subprocess.Popen | None = None
        self.uri = ""
        self._listeners: list[socket.socket] = []
        self._logs: list = []

    def start(self, timeout: float = 120.0) -> None:
        (CACHE / "bin").mkdir(parents=True, exist_ok=True)
        _initialize_data_files(str(CACHE))  # unpacks only when the package changed
        config = MilvusServerConfig(data_dir=str(self.base))
        for component in COMPONENTS:  # advertised addresses: the namespace has no other
            config.set(f"{component}.ip", "127.0.0.1")
        config.resolve()  # writes base/configs/milvus.yaml and makes data/ and logs/
        binary = CACHE / "bin" / "milvus"
        env = {**os.environ, "DEPLOY_MODE": "STANDALONE", "METRICS_PORT": str(METRICS_PORT),
               "MILVUS_RUN_DIR": str(self.base / "run"),
               "LD_LIBRARY_PATH": f"{binary.parent}:{os.environ.get('LD_LIBRARY_PATH', '')}"}
        # Held open for the server's lifetime, closed by stop().
        self._logs = [open(self.base / "logs" / f"milvus-{n}.log", "w")  # noqa: SIM115
                      for n in ("stdout", "stderr")]
        # unshare and sh exec in turn, so the server keeps this pid.
        self.process = subprocess.Popen(
            ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$0" run standalone',
             str(binary)], cwd=self.base, env=env, stdout=self._logs[0], stderr=self._logs[1])
        namespace = self._namespace()
        try:
            proxy = self._forward(namespace, int(config.get("proxy_port")))
            health = self._forward(namespace, METRICS_PORT)
        finally:
            os.close(namespace)
        self.uri = f"http://127.0.0.1:{proxy}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Milvus exited with {self.process.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz", timeout=2) as r:
                    if b"OK" in r.read():
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"Milvus not healthy after {timeout} s: {self.log_tail()}")

    def log_tail(self, chars: int = 2000) -> str:
        path = self.base / "logs" / "milvus-stderr.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def stop(self) -> None:
        for listener in self._listeners:
            listener.close()
        if self.process is not None:
            # Killed, not stopped: its data is thrown away, and a graceful stop takes 10 s.
            self.process.kill()
            self.process.wait()
            self.process = None
        for log in self._logs:
            log.close()

    # Forwarding ---------------------------------------------------------------------------

    def _namespace(self) -> int:
        """An open descriptor of the server's network namespace, once unshare has made it."""
        assert self.process is not None
        own = os.stat("/proc/self/ns/net").st_ino
        for _ in range(200):
            fd = os.open(f"/proc/{self.process.pid}/ns/net", os.O_RDONLY)
            if os.fstat(fd).st_ino != own:
                return fd
            os.close(fd)
            if self.process.poll() is not None:
                break
            time.sleep(0.025)
        raise RuntimeError(f"Milvus did not enter a network namespace of its own: {self.log_tail()}")

    def _forward(self, namespace: int, inner_port: int) -> int:
        """Listen on a free port of the host's 127.0.0.1 and connect each client to
        inner_port on the namespace's loopback; returns the host port."""
        listener = socket.create_server(("127.0.0.1", 0))
        self._listeners.append(listener)
        entered = threading.Event()
        threading.Thread(target=_accept, args=(listener, os.dup(namespace), inner_port, entered),
                         daemon=True).start()
        if not entered.wait(5):
            raise RuntimeError("the forwarder could not enter the Milvus network namespace")
        return listener.getsockname()[1]


def _accept(listener: socket.socket, namespace: int, inner_port: int,
            entered: threading.Event) -> None:
    # This thread alone enters the server's namespace: the sockets it creates from then on
    # live there, while the listener it accepts on was made in the host's.
    libc = ctypes.CDLL(None, use_errno=True)
    failed = libc.setns(namespace, CLONE_NEWNET)
    os.close(namespace)
    if failed:
        return
    entered.set()
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return  # the listener was closed: the server is stopping
        try:
            upstream = socket.create_connection(("127.0.0.1", inner_port), timeout=5)
            upstream.settimeout(None)
        except OSError:
            client.close()
            continue
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pump, args=(source, sink), daemon=True).start()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        for end in (source, sink):
            end.close()
