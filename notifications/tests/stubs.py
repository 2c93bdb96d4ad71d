"""Local stand-ins for the outside parties, spoken to over real sockets.

- WhatsAppStub: an HTTP server that answers like Meta's Cloud API or Fonnte, from a
  script per recipient, and records every request (so duplicates are visible here,
  independently of what the database says).
- SmtpStub: an aiosmtpd server that answers RCPT and DATA from a script.
"""

import json
import socket
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Reply:
    status: int = 200
    body: dict | None = None  # None: a success body in the provider's shape
    headers: dict = field(default_factory=dict)
    block: bool = False  # hold the request until `release()` (a provider that hangs)


class WhatsAppStub:
    """`kind` is "meta" or "fonnte". `script[recipient_digits]` is a list of replies, used in
    order; once used up (or for unknown recipients) every request succeeds."""

    def __init__(self, kind: str = "meta", script: dict | None = None):
        self.kind = kind
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.requests: list[dict] = []
        self.successes: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()
        self._released = threading.Event()
        self.first_request = threading.Event()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                stub._handle(self, raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.release()
        self.server.shutdown()
        self.server.server_close()

    def release(self):
        self._released.set()

    def _recipient(self, raw: bytes, handler) -> tuple[str, dict]:
        if self.kind == "meta":
            payload = json.loads(raw or b"{}")
            return payload.get("to", ""), payload
        form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        return form.get("target", ""), form

    def _handle(self, handler, raw: bytes):
        to, payload = self._recipient(raw, handler)
        with self._lock:
            script = self.script.get(to) or []
            reply = script.pop(0) if script else Reply()
            number = len(self.requests) + 1
            self.requests.append(
                {"to": to, "payload": payload, "path": handler.path, "auth": handler.headers.get("Authorization")}
            )
        self.first_request.set()
        if reply.block:
            self._released.wait(timeout=60)
            return  # the caller was killed long ago; answer nothing
        body = reply.body
        if body is None:
            if self.kind == "meta":
                body = {"messaging_product": "whatsapp", "messages": [{"id": f"wamid.stub{number}"}]}
            else:
                body = {"status": True, "id": [str(number)], "detail": "success! message in queue"}
        if reply.status == 200 and body.get("status", True) is not False and "error" not in body:
            with self._lock:
                self.successes[to] += 1
        data = json.dumps(body).encode()
        try:
            handler.send_response(reply.status)
            for name, value in reply.headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        except OSError:
            pass

    def calls_to(self, to: str) -> int:
        with self._lock:
            return sum(1 for r in self.requests if r["to"] == to)


class _SmtpHandler:
    def __init__(self, stub):
        self.stub = stub

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self.stub._lock:
            script = self.stub.rcpt_script.get(address) or []
            reply = script.pop(0) if script else "250 OK"
        if not reply.startswith("250"):
            return reply
        envelope.rcpt_tos.append(address)
        return reply

    async def handle_DATA(self, server, session, envelope):
        with self.stub._lock:
            recipient = envelope.rcpt_tos[0]
            script = self.stub.data_script.get(recipient) or []
            reply = script.pop(0) if script else "250 Message accepted"
            self.stub.data_attempts[recipient] += 1
            if reply.startswith("250"):
                self.stub.messages.append(
                    {"to": list(envelope.rcpt_tos), "data": envelope.content.decode("utf-8", errors="replace")}
                )
        return reply


class SmtpStub:
    """`data_script[address]` / `rcpt_script[address]`: SMTP replies used in order, then 250."""

    def __init__(self, *, data_script: dict | None = None, rcpt_script: dict | None = None):
        self.data_script = {k: list(v) for k, v in (data_script or {}).items()}
        self.rcpt_script = {k: list(v) for k, v in (rcpt_script or {}).items()}
        self.messages: list[dict] = []
        self.data_attempts: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()
        self.port = free_port()
        self.controller = Controller(_SmtpHandler(self), hostname="127.0.0.1", port=self.port)
        self.url = f"smtp://127.0.0.1:{self.port}"

    def __enter__(self):
        self.controller.start()
        return self

    def __exit__(self, *exc):
        self.controller.stop()

    def delivered_to(self, address: str) -> int:
        with self._lock:
            return sum(1 for m in self.messages if address in m["to"])
