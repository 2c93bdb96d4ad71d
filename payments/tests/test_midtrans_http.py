"""The Midtrans client's HTTP layer over real sockets: kept-alive connections (reuse, the idle limit,
a fork, closing them), requests as requests sent them, the environment's proxy and CA bundle, and
answers that break off. Small local servers stand in for Midtrans and for a proxy; no HTTP library
is mocked. requests stays installed (other modules use it), so it also serves as the reference for
what the environment meant to it."""

from __future__ import annotations

import base64
import http.server
import json
import os
import select
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time

import pytest
import requests

from payments import midtrans

ORDER = "BF-20260101-HTTPTEST-1"
KEY = "SB-Mid-server-HTTP-TEST"
_ENVIRONMENT = (
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch, settings):
    # The machine's own proxy or CA settings must not decide these tests; pools built under another
    # environment are dropped (the next call reads the environment again).
    for name in _ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    settings.MIDTRANS_SERVER_KEY = KEY
    settings.MIDTRANS_STATUS_RETRIES = 0
    midtrans.http_sessions_close()
    yield
    midtrans.http_sessions_close()


def _wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def _status() -> dict:
    return midtrans.transaction_status(midtrans_order_id=ORDER)


def _json_answer(handler, payload: dict, status: int = 200) -> None:
    data = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def _raw_answer(data: bytes):
    """An answer written byte for byte, after which the server closes the connection."""

    def answer(handler) -> None:
        handler.wfile.write(data)
        handler.wfile.flush()
        handler.close_connection = True

    return answer


class _MidtransHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keeps connections alive

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        server = self.server
        server.seen.append(
            {
                "port": self.client_address[1],
                "method": self.command,
                "path": self.path,
                "headers": self.headers,
                "body": self.rfile.read(length) if length else b"",
            }
        )
        if server.delay:
            time.sleep(server.delay)
        if server.answers:
            server.answers.pop(0)(self)
            return
        payload = {"status_code": "200", "transaction_status": "settlement", "order_id": ORDER}
        _json_answer(self, {**payload, "client_port": self.client_address[1]})

    def finish(self) -> None:
        super().finish()
        self.server.closed_ports.append(self.client_address[1])

    def log_message(self, *args) -> None:
        pass


def _tunnel(client: socket.socket, upstream: socket.socket) -> None:
    try:
        while True:
            readable, _, _ = select.select([client, upstream], [], [], 10)
            if not readable:
                return
            for source in readable:
                data = source.recv(65536)
                if not data:
                    return
                (upstream if source is client else client).sendall(data)
    finally:
        upstream.close()


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    """A forward proxy: CONNECT tunnels to the target; a plain-HTTP request is answered here."""

    protocol_version = "HTTP/1.1"

    def do_CONNECT(self) -> None:
        self.server.seen.append({"method": "CONNECT", "target": self.path, "headers": self.headers})
        host, port = self.path.rsplit(":", 1)
        upstream = socket.create_connection((host, int(port)), timeout=10)
        self.send_response(200, "Connection established")
        self.end_headers()
        self.wfile.flush()
        _tunnel(self.connection, upstream)
        self.close_connection = True

    def do_GET(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.server.seen.append({"method": self.command, "target": self.path, "headers": self.headers})
        _json_answer(self, {"status_code": "200", "order_id": ORDER, "answered_by": "proxy"})

    do_POST = do_GET

    def log_message(self, *args) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler, tls: ssl.SSLContext | None = None):
        super().__init__(("127.0.0.1", 0), handler)
        self.seen: list[dict] = []
        self.closed_ports: list[int] = []
        self.answers: list = []
        self.delay = 0.0
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.port = self.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


@pytest.fixture
def midtrans_server(settings):
    server = _Server(_MidtransHandler)
    settings.MIDTRANS_API_URL = settings.MIDTRANS_SNAP_URL = server.url
    yield server
    midtrans.http_sessions_close()
    server.stop()


@pytest.fixture
def proxy_server():
    server = _Server(_ProxyHandler)
    yield server
    midtrans.http_sessions_close()
    server.stop()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 (only), its key, and a hashed CA directory holding it."""
    openssl = shutil.which("openssl")
    if not openssl:
        pytest.fail("the openssl command is missing (Debian package openssl)")
    folder = tmp_path_factory.mktemp("tls")
    cert, key, ca_dir = folder / "cert.pem", folder / "key.pem", folder / "ca"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    subject_hash = subprocess.run(
        [openssl, "x509", "-hash", "-noout", "-in", str(cert)], check=True, capture_output=True, text=True
    ).stdout.strip()
    ca_dir.mkdir()
    shutil.copy(cert, ca_dir / f"{subject_hash}.0")
    return {"cert": str(cert), "key": str(key), "ca_dir": str(ca_dir)}


@pytest.fixture
def tls_server(certificate, settings):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate["cert"], certificate["key"])
    server = _Server(_MidtransHandler, tls=context)
    settings.MIDTRANS_API_URL = settings.MIDTRANS_SNAP_URL = server.url
    yield server
    midtrans.http_sessions_close()
    server.stop()


# --- kept-alive connections ------------------------------------------------------------------------


def test_calls_reuse_one_kept_alive_connection_across_threads(midtrans_server):
    ports = [_status()["client_port"] for _ in range(3)]
    other_thread = []
    thread = threading.Thread(target=lambda: other_thread.append(_status()["client_port"]))
    thread.start()
    thread.join()
    assert len(set(ports + other_thread)) == 1
    assert midtrans_server.closed_ports == []


def test_a_connection_idle_longer_than_the_limit_is_not_reused(midtrans_server, monkeypatch):
    monkeypatch.setattr(midtrans, "_KEEPALIVE_IDLE_SECONDS", 0.3)
    first = _status()["client_port"]
    assert _status()["client_port"] == first  # called again at once: reused
    time.sleep(0.5)
    later = _status()["client_port"]
    assert later != first
    _wait_for(lambda: first in midtrans_server.closed_ports)  # the idle one was closed, not left open
    assert _status()["client_port"] == later


def test_a_forked_child_opens_its_own_connection_and_leaves_the_parents_alone(midtrans_server):
    parent_port = _status()["client_port"]
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its connection's port and leave at once, without pytest's teardown
        code = 1
        try:
            os.close(read_end)
            os.write(write_end, str(_status()["client_port"]).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        child_port = pipe.read()
    _, wait_status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(wait_status) == 0
    assert child_port and int(child_port) != parent_port
    # The parent's kept-alive connection was neither used nor closed by the child.
    assert _status()["client_port"] == parent_port
    assert parent_port not in midtrans_server.closed_ports


def test_a_fork_while_another_thread_holds_a_pool_lock_does_not_hang_the_child(midtrans_server):
    # given a kept connection, and its pool's queue lock held (as by another thread caught
    # taking or returning a connection at the moment of the fork)
    parent_port = _status()["client_port"]
    manager = midtrans._pool_manager(midtrans_server.url + "/")
    lock = next(iter(manager.pools._container.values())).pool.mutex
    del manager  # only the lock is held here: the child's copy of the pool is the module's alone
    with lock:
        pid = os.fork()
        if pid == 0:  # the child: leave at once, without pytest's teardown
            os._exit(0)
    # then the child got past the fork and exited promptly
    deadline = time.monotonic() + 5
    while (waited := os.waitpid(pid, os.WNOHANG)) == (0, 0) and time.monotonic() < deadline:
        time.sleep(0.02)
    if waited == (0, 0):
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung at the fork")
    assert os.waitstatus_to_exitcode(waited[1]) == 0
    # and the parent's kept connection is still the one it uses
    assert _status()["client_port"] == parent_port
    assert parent_port not in midtrans_server.closed_ports


def test_http_sessions_close_closes_every_kept_connection(midtrans_server):
    midtrans_server.delay = 0.3  # calls at the same time need a connection each
    threads = [threading.Thread(target=_status) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ports = {request["port"] for request in midtrans_server.seen}
    assert len(ports) == 3
    assert not ports & set(midtrans_server.closed_ports)
    midtrans.http_sessions_close()
    _wait_for(lambda: ports <= set(midtrans_server.closed_ports))
    midtrans_server.delay = 0.0
    assert _status()["client_port"] not in ports  # and the next call connects afresh


# --- the request ----------------------------------------------------------------------------------------


def test_requests_go_out_as_requests_sent_them(midtrans_server):
    # given a refund with a non-ASCII reason, a status read and a body-less cancel
    midtrans.transaction_refund(
        midtrans_order_id=ORDER, refund_key="rk-1", amount=5000, reason="Kelas dibatalkan — maaf, Budi"
    )
    _status()
    midtrans.transaction_cancel(midtrans_order_id=ORDER)
    refund, status, cancel = midtrans_server.seen
    expected_auth = "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()
    for seen in (refund, status, cancel):
        assert seen["headers"]["Accept"] == "application/json"
        assert seen["headers"]["Content-Type"] == "application/json"
        assert seen["headers"]["Authorization"] == expected_auth
    # then each is what requests' json= would have sent
    cases = [
        (
            refund,
            "POST",
            f"/v2/{ORDER}/refund",
            {"refund_key": "rk-1", "amount": 5000, "reason": "Kelas dibatalkan — maaf, Budi"},
        ),
        (status, "GET", f"/v2/{ORDER}/status", None),
        (cancel, "POST", f"/v2/{ORDER}/cancel", None),
    ]
    for seen, method, path, payload in cases:
        reference = requests.Request(method, midtrans_server.url + path, json=payload).prepare()
        assert (seen["method"], seen["path"]) == (method, path)
        assert seen["body"] == (reference.body or b"")
        assert seen["headers"].get("Content-Length") == reference.headers.get("Content-Length")


# --- the answer -----------------------------------------------------------------------------------------


def test_retry_after_and_location_are_read_whatever_their_case(midtrans_server):
    midtrans_server.answers = [
        _raw_answer(
            # "connection: close" as well: the server closes after a raw answer, and the next
            # call must not race that close on the kept connection (a POST is never re-sent).
            b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nretry-after: 7\r\n"
            b'connection: close\r\ncontent-length: 21\r\n\r\n{"status_code":"429"}'
        ),
        _raw_answer(b"HTTP/1.1 302 Found\r\nlocation: https://elsewhere.example/v2\r\ncontent-length: 0\r\n\r\n"),
    ]
    with pytest.raises(midtrans.MidtransRateLimited) as limited:
        midtrans.transaction_cancel(midtrans_order_id=ORDER)
    assert limited.value.retry_after == 7.0
    with pytest.raises(midtrans.MidtransConfigurationError) as redirected:
        midtrans.transaction_cancel(midtrans_order_id=ORDER)
    assert redirected.value.location == "https://elsewhere.example/v2"
    assert len(midtrans_server.seen) == 2  # the redirect was not followed


def test_a_connection_closed_without_an_answer_is_a_timeout(midtrans_server):
    midtrans_server.answers = [_raw_answer(b"")]
    with pytest.raises(midtrans.MidtransTimeout, match="Midtrans did not answer"):
        midtrans.transaction_cancel(midtrans_order_id=ORDER)


def test_a_post_whose_kept_alive_connection_drops_before_the_answer_is_never_sent_again(midtrans_server):
    # urllib3 with retries=False: a POST (a Snap create, a refund) must not go out twice.
    port = _status()["client_port"]
    midtrans_server.answers = [_raw_answer(b"")]  # reads the POST, then closes without answering
    with pytest.raises(midtrans.MidtransTimeout):
        midtrans.transaction_cancel(midtrans_order_id=ORDER)
    time.sleep(0.3)  # a re-send, on this connection or a new one, would have arrived by now
    assert [(seen["method"], seen["port"]) for seen in midtrans_server.seen] == [("GET", port), ("POST", port)]


def test_a_post_after_the_server_dropped_the_idle_connection_goes_out_once_on_a_new_one(midtrans_server):
    body = json.dumps({"status_code": "200", "order_id": ORDER}).encode()
    # A whole answer that promises nothing about closing; the server closes right after it.
    head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    midtrans_server.answers = [_raw_answer(head.encode() + body)]
    _status()
    (first,) = [seen["port"] for seen in midtrans_server.seen]
    _wait_for(lambda: first in midtrans_server.closed_ports)
    time.sleep(0.1)  # the server's FIN has reached the client's socket
    assert midtrans.transaction_cancel(midtrans_order_id=ORDER)["status_code"] == "200"
    methods = [(seen["method"], seen["port"] == first) for seen in midtrans_server.seen]
    assert methods == [("GET", True), ("POST", False)]


def test_an_answer_cut_short_is_a_server_error(midtrans_server):
    midtrans_server.answers = [
        _raw_answer(b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"status_')
    ]
    with pytest.raises(midtrans.MidtransServerError) as exc:
        midtrans.transaction_cancel(midtrans_order_id=ORDER)
    assert not isinstance(exc.value, midtrans.MidtransTimeout)
    assert _status()["order_id"] == ORDER  # the broken connection was not reused


def test_a_json_answer_is_read_as_utf8_with_bad_bytes_replaced(midtrans_server):
    data = '{"status_code": "200", "order_id": "Budi \u2014 '.encode() + b'\xff"}'
    head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n"
    midtrans_server.answers = [_raw_answer(head.encode() + data)]
    assert _status()["order_id"] == "Budi \u2014 \ufffd"


# --- the environment: proxy and CA bundle ------------------------------------------------------------------

_PROXY = "http://proxy.local:3128"


_CERTIFI = requests.certs.where()
_BOB = {"Proxy-Authorization": "Basic " + base64.b64encode(b"bob:s:cret").decode()}


@pytest.mark.parametrize(
    ("environment", "url", "proxy", "ca_bundle", "proxy_headers"),
    [
        ({}, "https://api.midtrans.com", None, _CERTIFI, {}),
        ({"HTTPS_PROXY": _PROXY}, "https://api.midtrans.com", _PROXY, _CERTIFI, {}),
        ({"HTTPS_PROXY": _PROXY}, "http://127.0.0.1:8000", None, _CERTIFI, {}),
        ({"HTTP_PROXY": _PROXY}, "http://127.0.0.1:8000", _PROXY, _CERTIFI, {}),
        (
            {"https_proxy": "http://lower.local:1", "HTTPS_PROXY": "http://upper.local:2"},
            "https://api.midtrans.com",
            "http://lower.local:1",
            _CERTIFI,
            {},
        ),
        ({"ALL_PROXY": _PROXY}, "https://api.midtrans.com", _PROXY, _CERTIFI, {}),
        ({"HTTPS_PROXY": "proxy.local:3128"}, "https://api.midtrans.com", _PROXY, _CERTIFI, {}),
        (
            {"HTTPS_PROXY": "http://bob:s%3Acret@proxy.local:3128"},
            "https://api.midtrans.com",
            "http://bob:s%3Acret@proxy.local:3128",
            _CERTIFI,
            _BOB,
        ),
        (
            {"HTTPS_PROXY": "http://bob@proxy.local:3128"},
            "https://api.midtrans.com",
            "http://bob@proxy.local:3128",
            _CERTIFI,
            {},
        ),
        ({"HTTPS_PROXY": _PROXY, "NO_PROXY": "api.midtrans.com"}, "https://api.midtrans.com", None, _CERTIFI, {}),
        ({"HTTPS_PROXY": _PROXY, "NO_PROXY": ".midtrans.com"}, "https://api.midtrans.com", None, _CERTIFI, {}),
        ({"HTTPS_PROXY": _PROXY, "NO_PROXY": "midtrans.com"}, "https://api.midtrans.com", None, _CERTIFI, {}),
        ({"HTTPS_PROXY": _PROXY, "NO_PROXY": "ample.com"}, "https://example.com", _PROXY, _CERTIFI, {}),
        (
            {"HTTPS_PROXY": _PROXY, "NO_PROXY": "api.midtrans.com:8443"},
            "https://api.midtrans.com:8443",
            None,
            _CERTIFI,
            {},
        ),
        (
            {"HTTPS_PROXY": _PROXY, "NO_PROXY": "api.midtrans.com:8443"},
            "https://api.midtrans.com",
            _PROXY,
            _CERTIFI,
            {},
        ),
        ({"HTTPS_PROXY": _PROXY, "no_proxy": "*"}, "https://api.midtrans.com", None, _CERTIFI, {}),
        ({"HTTP_PROXY": _PROXY, "NO_PROXY": "foo.example, 10.0.0.0/8"}, "http://10.1.2.3:8000", None, _CERTIFI, {}),
        ({"HTTP_PROXY": _PROXY, "NO_PROXY": "10.0.0.0/8"}, "http://11.1.2.3:8000", _PROXY, _CERTIFI, {}),
        ({"HTTP_PROXY": _PROXY, "NO_PROXY": "10.0.0.0/0"}, "http://10.1.2.3:8000", _PROXY, _CERTIFI, {}),
        ({"HTTP_PROXY": _PROXY, "NO_PROXY": "127.0.0.1"}, "http://127.0.0.1:8000", None, _CERTIFI, {}),
        ({"HTTP_PROXY": _PROXY, "NO_PROXY": "localhost"}, "http://localhost:8000", None, _CERTIFI, {}),
        (
            {"REQUESTS_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt"},
            "https://api.midtrans.com",
            None,
            "/etc/ssl/certs/ca-certificates.crt",
            {},
        ),
        ({"CURL_CA_BUNDLE": "/etc/ssl/certs"}, "https://api.midtrans.com", None, "/etc/ssl/certs", {}),
        ({"REQUESTS_CA_BUNDLE": "/a.pem", "CURL_CA_BUNDLE": "/b.pem"}, "https://api.midtrans.com", None, "/a.pem", {}),
        ({"REQUESTS_CA_BUNDLE": "", "CURL_CA_BUNDLE": "/b.pem"}, "https://api.midtrans.com", None, "/b.pem", {}),
    ],
)
def test_environment_settings_read_proxy_no_proxy_credentials_and_ca_bundle(
    monkeypatch, environment, url, proxy, ca_bundle, proxy_headers
):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)

    ours = midtrans._env_settings(url + "/")

    assert (ours["proxy"], ours["ca_bundle"]) == (proxy, ca_bundle)
    assert (midtrans._proxy_headers(ours["proxy"]) if ours["proxy"] else {}) == proxy_headers


def test_a_proxy_from_the_environment_carries_the_calls_with_its_credentials(proxy_server, settings, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", f"http://bob:s%3Acret@127.0.0.1:{proxy_server.port}")
    settings.MIDTRANS_API_URL = "http://midtrans.invalid"  # a name only the proxy sees
    assert _status()["answered_by"] == "proxy"
    (seen,) = proxy_server.seen
    assert (seen["method"], seen["target"]) == ("GET", f"http://midtrans.invalid/v2/{ORDER}/status")
    assert seen["headers"]["Proxy-Authorization"] == "Basic " + base64.b64encode(b"bob:s:cret").decode()
    assert seen["headers"]["Authorization"] == "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "127.0.0.0/8", "example.com,127.0.0.1"])
def test_no_proxy_sends_the_calls_direct(proxy_server, midtrans_server, monkeypatch, no_proxy):
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy_server.port}")
    monkeypatch.setenv("NO_PROXY", no_proxy)
    assert _status()["order_id"] == ORDER
    assert len(midtrans_server.seen) == 1
    assert proxy_server.seen == []


def test_https_goes_through_the_proxys_tunnel_and_verifies_midtrans(proxy_server, tls_server, certificate, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy_server.port}")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certificate["cert"])
    assert _status()["order_id"] == ORDER
    assert _status()["order_id"] == ORDER
    # One tunnel, kept alive for both calls.
    assert [(s["method"], s["target"]) for s in proxy_server.seen] == [("CONNECT", f"127.0.0.1:{tls_server.port}")]
    assert len(tls_server.seen) == 2


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
@pytest.mark.parametrize("kind", ["cert", "ca_dir"])
def test_the_ca_bundle_from_the_environment_verifies_midtrans(tls_server, certificate, monkeypatch, variable, kind):
    monkeypatch.setenv(variable, certificate[kind])
    assert _status()["order_id"] == ORDER


def test_by_default_a_certificate_outside_certifis_bundle_is_refused(tls_server):
    with pytest.raises(midtrans.MidtransTimeout, match="SSLError"):
        _status()
    assert tls_server.seen == []


def test_a_certificate_for_another_host_is_refused(tls_server, certificate, monkeypatch, settings):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certificate["cert"])
    settings.MIDTRANS_API_URL = f"https://localhost:{tls_server.port}"  # the certificate names 127.0.0.1 only
    with pytest.raises(midtrans.MidtransTimeout, match="SSLError"):
        _status()
    assert tls_server.seen == []


def test_a_ca_bundle_that_cannot_be_read_is_a_configuration_error_naming_it(
    tls_server, monkeypatch, tmp_path, settings
):
    # Our configuration, not Midtrans being down: said as such, not retried, no breaker failure.
    missing = str(tmp_path / "missing.pem")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", missing)
    settings.MIDTRANS_STATUS_RETRIES = 2
    settings.MIDTRANS_BREAKER_FAILURES = 1
    for _ in range(2):  # the second call is not refused by an open breaker either
        with pytest.raises(midtrans.MidtransConfigurationError, match="REQUESTS_CA_BUNDLE") as failed:
            _status()
        assert missing in str(failed.value)
        assert not isinstance(failed.value, midtrans.MidtransUnavailable)
    assert midtrans.circuit_state()["core"] == {"state": "closed", "failures": 0, "opened_at": None}
    assert tls_server.seen == []


def test_the_environment_is_read_once_per_base_url_not_per_connection(tls_server, certificate, monkeypatch):
    monkeypatch.setattr(midtrans, "_KEEPALIVE_IDLE_SECONDS", 0.0)  # every call opens a new connection
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certificate["cert"])
    assert _status()["order_id"] == ORDER
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    time.sleep(0.01)
    assert _status()["order_id"] == ORDER  # a new TLS connection, verified with the bundle read before
    assert len({seen["port"] for seen in tls_server.seen}) == 2
    midtrans.http_sessions_close()  # forgets the pools: the next call reads the environment again
    with pytest.raises(midtrans.MidtransTimeout, match="SSLError"):
        _status()
