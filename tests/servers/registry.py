"""A real OCI registry (Debian's ``docker-registry``, CNCF distribution 2.8) for tests.

Fixtures:

- ``registry``: plain HTTP on 127.0.0.1, a free port, storage in a temp dir;
- ``secure_registry``: TLS with a CA made here (``cryptography``) and htpasswd (bcrypt) auth;
- ``hung_server``: a socket that accepts connections and never answers;
- ``flaky_proxy``: an HTTP proxy in front of ``registry`` answering 503 on demand.

Every request the registry serves is in its access log (:meth:`RegistryServer.requests`).
Readiness is waited on (``listening on`` in the log, then ``GET /v2/`` answers), never slept for.
"""

from __future__ import annotations

import base64
import datetime
import http.client
import ipaddress
import json
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.support.repo import Repo

__all__ = ["FlakyProxy", "HungServer", "RegistryServer", "Request", "configure", "free_port",
           "make_ca"]

USER = "ci-robot"
PASSWORD = "s3cret-Pa55word-for-tests"  # a test fixture's own password
START_TIMEOUT = 20.0
_LISTENING = re.compile(r'listening on 127\.0\.0\.1:(\d+)')
# gorilla's combined log: 127.0.0.1 - - [date] "GET /v2/ HTTP/1.1" 200 2 "" "agent"
_ACCESS = re.compile(r'^\S+ \S+ \S+ \[[^\]]+\] "(\S+) (\S+) [^"]*" (\d{3}) \S+ "[^"]*" "([^"]*)"')
#: The fixture's own probes (readiness, sentinels) and direct reads say who they are.
_OWN_AGENT = "esp32tasks-test-fixture"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    status: int

    @property
    def kind(self) -> str:
        """``blob``, ``upload``, ``manifest``, ``ping`` or ``other``."""
        if "/blobs/uploads/" in self.path:
            return "upload"
        if "/blobs/" in self.path:
            return "blob"
        if "/manifests/" in self.path:
            return "manifest"
        return "ping" if self.path.rstrip("/") == "/v2" else "other"

    def __str__(self) -> str:
        return f"{self.method} {self.path} {self.status}"


@dataclass
class RegistryServer:
    """One ``docker-registry serve`` process; restartable on the same port and storage."""

    workdir: Path
    tls: bool = False
    auth: bool = False
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    ca: Path | None = None
    _sentinels: int = field(default=0)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def log(self) -> Path:
        return self.workdir / "registry.log"

    @property
    def storage(self) -> Path:
        return self.workdir / "storage"

    def repository(self, path: str = "cloud-iot/hello") -> str:
        return f"{self.host}/{path}"

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        offset = self.log.stat().st_size if self.log.exists() else 0
        out = self.log.open("ab")
        self.process = subprocess.Popen(["docker-registry", "serve", str(config)],
                                        stdout=out, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
        out.close()
        deadline = time.monotonic() + START_TIMEOUT
        while self.port == 0 or not self._answers():
            if self.process.poll() is not None:
                raise RuntimeError(f"docker-registry exited {self.process.returncode}:\n"
                                   + self.log.read_text(errors="replace")[offset:])
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"docker-registry not ready after {START_TIMEOUT} s:\n"
                                   + self.log.read_text(errors="replace")[offset:])
            if self.port == 0:
                found = _LISTENING.search(self.log.read_text(errors="replace")[offset:])
                if found:
                    self.port = int(found.group(1))
            time.sleep(0.02)  # polling interval while waiting for a condition

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def _write_config(self) -> Path:
        http: dict[str, object] = {"addr": f"127.0.0.1:{self.port}",
                                   "secret": "esp32tasks-tests"}
        config: dict[str, object] = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text"},
            "storage": {"filesystem": {"rootdirectory": str(self.storage)},
                        "delete": {"enabled": True},
                        "maintenance": {"uploadpurging": {"enabled": False}}},
            "http": http,
        }
        if self.tls:
            certs = self.workdir / "certs"
            if self.ca is None:
                self.ca = make_ca(certs)
            http["tls"] = {"certificate": str(certs / "server.crt"),
                           "key": str(certs / "server.key")}
        if self.auth:
            htpasswd = self.workdir / "htpasswd"
            if not htpasswd.exists():
                line = subprocess.run(["htpasswd", "-Bbn", USER, PASSWORD], check=True,
                                      capture_output=True, text=True).stdout.strip()
                htpasswd.write_text(line + "\n")
            config["auth"] = {"htpasswd": {"realm": "esp32tasks-tests", "path": str(htpasswd)}}
        path = self.workdir / "config.yml"
        path.write_text(json.dumps(config, indent=2))  # YAML is a superset of JSON
        return path

    # -- requests -------------------------------------------------------------------

    def _open(self, path: str, method: str = "GET") -> int:
        request = urllib.request.Request(  # noqa: S310  # http(s) to our own server
            f"{self.scheme}://{self.host}{path}", method=method,
            headers={"User-Agent": _OWN_AGENT})
        if self.auth:
            token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        context = ssl.create_default_context(cafile=str(self.ca)) if self.tls else None
        try:
            with urllib.request.urlopen(request, timeout=5, context=context) as response:  # noqa: S310
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    def _answers(self) -> bool:
        if self.port == 0:
            return False
        try:
            return self._open("/v2/") == 200
        except OSError:
            return False

    def requests(self) -> list[Request]:
        """Every request in the access log so far, in order (our own probes left out).

        The access log line is written just after the response, so a sentinel request is
        sent and waited for: once it shows, every earlier request is in the log.
        """
        self._sentinels += 1
        marker = f"/v2/_sentinel/{uuid.uuid4().hex}"
        assert self.process is not None
        assert self.process.poll() is None, "the registry is not running"
        self._open(marker)
        deadline = time.monotonic() + 10
        while True:
            lines = self.log.read_text(errors="replace").splitlines()
            if any(f" {marker} " in line for line in lines):
                break
            assert time.monotonic() < deadline, "sentinel request never logged"
            time.sleep(0.01)  # polling interval while waiting for a condition
        found = []
        for line in lines:
            match = _ACCESS.match(line)
            if match and match.group(4) != _OWN_AGENT:
                found.append(Request(match.group(1), match.group(2), int(match.group(3))))
        return found

    def manifest(self, repository_path: str, reference: str) -> tuple[str, bytes]:
        """``(digest, bytes)`` of a manifest or index, read directly over HTTP."""
        connection = self._connection()
        headers = {"Accept": "application/vnd.oci.image.index.v1+json, "
                             "application/vnd.oci.image.manifest.v1+json"}
        headers.update(self._auth_header())
        headers["User-Agent"] = _OWN_AGENT
        connection.request("GET", f"/v2/{repository_path}/manifests/{reference}",
                           headers=headers)
        response = connection.getresponse()
        body = response.read()
        assert response.status == 200, (response.status, body)
        return response.getheader("Docker-Content-Digest") or "", body

    def put_manifest(self, repository_path: str, reference: str, media_type: str,
                     body: bytes) -> None:
        connection = self._connection()
        headers = {"Content-Type": media_type, "User-Agent": _OWN_AGENT, **self._auth_header()}
        connection.request("PUT", f"/v2/{repository_path}/manifests/{reference}", body=body,
                           headers=headers)
        response = connection.getresponse()
        assert response.status == 201, (response.status, response.read())

    def delete_blob(self, digest: str) -> None:
        """Remove a blob's data from storage behind the clients' back, as garbage collection
        or a wiped disk would: the registry then answers 404 for it in every repository."""
        hexdigest = digest.removeprefix("sha256:")
        data = self.storage / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest
        assert data.is_dir(), f"{digest} is not in the registry's storage"
        shutil.rmtree(data)

    def _connection(self) -> http.client.HTTPConnection:
        if self.tls:
            context = ssl.create_default_context(cafile=str(self.ca))
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=10,
                                               context=context)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def _auth_header(self) -> dict[str, str]:
        if not self.auth:
            return {}
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        return {"Authorization": f"Basic {token}"}


def make_ca(directory: Path) -> Path:
    """A CA and a server certificate for 127.0.0.1; returns the CA certificate's path."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "esp32tasks test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (directory / "ca.crt").write_bytes(ca_cert.public_bytes(pem))
    (directory / "server.crt").write_bytes(cert.public_bytes(pem))
    (directory / "server.key").write_bytes(key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return directory / "ca.crt"


class HungServer:
    """Accepts TCP connections and never sends a byte: a registry that hangs."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(64)
        self.port = int(self.socket.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.socket.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.socket.close()
        for conn in self.accepted:
            conn.close()


class FlakyProxy:
    """Forwards HTTP to an upstream registry, but answers 503 to the next ``fail`` requests.

    With ``rewrite_location`` set to a ``host:port``, every ``Location`` it passes back
    points there instead (what a hostile hop would do to an upload session).
    """

    def __init__(self, upstream: RegistryServer) -> None:
        self.upstream = upstream
        self.fail = 0
        self.failed = 0
        self.rewrite_location: str | None = None
        self.lock = threading.Lock()
        #: ``(method, path, headers)`` of every request received, header names lower case.
        self.received: list[tuple[str, str, dict[str, str]]] = []
        #: ``(method, path, status)`` of each request answered from upstream, in order.
        self.answered: list[tuple[str, str, int]] = []
        self._answer = threading.Condition(self.lock)
        #: Called with (method, path) before a request is forwarded (e.g. to kill upstream).
        self.on_request: Callable[[str, str], None] | None = None
        #: Called with (method, path, status) once upstream answered, before the answer
        #: goes back (e.g. to hold it while time passes).
        self.on_answer: Callable[[str, str, int], None] | None = None
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with proxy.lock:
                    proxy.received.append((self.command, self.path,
                                           {k.lower(): v for k, v in self.headers.items()}))
                    failing = proxy.fail > 0
                    if failing:
                        proxy.fail -= 1
                        proxy.failed += 1
                if failing:
                    payload = b'{"errors":[{"code":"UNAVAILABLE","message":"try later"}]}'
                    self.send_response(503)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if proxy.on_request is not None:
                    proxy.on_request(self.command, self.path)
                connection = http.client.HTTPConnection("127.0.0.1", upstream.port, timeout=30)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("connection", "content-length")}
                try:
                    connection.request(self.command, self.path, body=body, headers=headers)
                    response = connection.getresponse()
                    data = response.read()
                except OSError:
                    # upstream is gone: hang up without an answer, as a dead server would
                    self.close_connection = True
                    return
                if proxy.on_answer is not None:
                    proxy.on_answer(self.command, self.path, response.status)
                self.send_response(response.status)
                for key, value in response.getheaders():
                    sent = value
                    if key.lower() == "location" and proxy.rewrite_location:
                        sent = re.sub(r"^(https?://)[^/]+", rf"\g<1>{proxy.rewrite_location}",
                                      value)
                    if key.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(key, sent)
                # a HEAD's length is the GET's (the registry's proof of a blob's size)
                self.send_header("Content-Length", response.getheader("Content-Length", "0")
                                 if self.command == "HEAD" else str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                self.wfile.flush()
                connection.close()
                with proxy._answer:
                    proxy.answered.append((self.command, self.path, response.status))
                    proxy._answer.notify_all()

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def wait_answered(self, match: Callable[[str, str, int], bool], timeout: float = 10) -> None:
        """Wait until a request matching ``match(method, path, status)`` has been answered."""
        with self._answer:
            assert self._answer.wait_for(lambda: any(match(*a) for a in self.answered),
                                         timeout), "no such request was answered"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _skip_without_registry() -> None:
    if subprocess.run(["which", "docker-registry"], capture_output=True,
                      check=False).returncode != 0:
        pytest.skip("docker-registry is not installed (ci/setup installs it)")


@pytest.fixture
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A plain-HTTP registry on 127.0.0.1 with its own storage; stopped afterwards."""
    _skip_without_registry()
    server = RegistryServer(tmp_path_factory.mktemp("registry"))
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def secure_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A registry over TLS (CA made in the test) with htpasswd (bcrypt) basic auth."""
    _skip_without_registry()
    server = RegistryServer(tmp_path_factory.mktemp("secure-registry"), tls=True, auth=True)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def hung_server() -> Iterator[HungServer]:
    server = HungServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def flaky_proxy(registry: RegistryServer) -> Iterator[FlakyProxy]:
    proxy = FlakyProxy(registry)
    try:
        yield proxy
    finally:
        proxy.close()


def free_port() -> int:
    """A port nothing listens on (bound and released): a registry that is down."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])




def configure(repo: Repo, server: RegistryServer | HungServer | FlakyProxy | str,
              path: str = "cloud-iot/hello", **keys: object) -> str:
    """Add ``[registry]`` for ``server`` to the repo's targets.toml and commit it.

    Plain-HTTP servers get ``insecure = true`` unless ``keys`` says otherwise. Returns the
    repository (``host:port/path``).
    """
    host = server if isinstance(server, str) else server.host
    repository = f"{host}/{path}"
    tls = isinstance(server, RegistryServer) and server.tls
    settings: dict[str, object] = {"repository": repository}
    if not tls:
        settings["insecure"] = True
    settings.update(keys)
    lines = ["", "[registry]"] + [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    text = repo.read("targets.toml")
    assert "[registry]" not in text
    repo.write("targets.toml", text + "\n".join(lines) + "\n")
    repo.commit("release to the test registry")
    return repository
