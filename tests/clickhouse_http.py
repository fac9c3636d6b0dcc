"""A test-only ClickHouse HTTP interface served from chDB (the same engine), for the suite of the
clickhouse-connect backend: no ClickHouse server new enough installs on this machine.

It is what it says, no more: the subset of the protocol clickhouse-connect uses (the query in the
URL or the body, ``param_*`` bound parameters, settings as URL parameters, ``default_format``,
INSERT data in the body, ``/ping``, errors as HTTP 500 with ClickHouse's message and
``X-ClickHouse-Exception-Code``). URL settings apply to SELECT and INSERT … FORMAT only. No
compression, no sessions, no auth. Set
``CARDFLOW_TEST_CLICKHOUSE_URL`` to run the same tests against a real server instead.

    python -m tests.clickhouse_http --port 8123 --path /tmp/ch
"""

from __future__ import annotations

import argparse
import re
import threading
from email.parser import BytesParser
from email.policy import default
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlparse

from chdb import session

# URL parameters that are protocol, not query settings.
PROTOCOL = {
    "query",
    "database",
    "default_format",
    "query_id",
    "session_id",
    "session_timeout",
    "user",
    "password",
    "compress",
    "decompress",
    "enable_http_compression",
    "wait_end_of_query",
    "send_progress_in_http_headers",
    "http_headers_progress_interval_ms",
    "buffer_size",
    "client_protocol_version",
    "session_check",
    "quota_key",
}
FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*$", re.IGNORECASE)
INSERT = re.compile(r"^\s*INSERT\b", re.IGNORECASE)
SELECT = re.compile(r"^\s*(SELECT|WITH)\b", re.IGNORECASE)
SETTING = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Adapter(BaseHTTPRequestHandler):
    engine: session.Session
    lock = threading.Lock()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if urlparse(self.path).path == "/ping":
            self._send(200, b"Ok.\n", {})
            return
        self._query(b"")

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        length = int(self.headers.get("Content-Length") or 0)
        self._query(self.rfile.read(length))

    def _query(self, body: bytes) -> None:
        args = dict(parse_qsl(urlparse(self.path).query, keep_blank_values=True))
        kind = self.headers.get("Content-Type", "")
        if kind.startswith("multipart/form-data"):  # large bound parameters come as form fields
            args.update(_form_fields(kind, body))
            body = b""
        text = args.get("query")
        data = b""
        if text is None:
            text, data = body.decode(), b""
        else:
            data = body
        params = {k[len("param_") :]: v for k, v in args.items() if k.startswith("param_")}
        settings = {
            k: v
            for k, v in args.items()
            if k not in PROTOCOL and not k.startswith("param_") and SETTING.match(k)
        }
        fmt = args.get("default_format", "TabSeparated")
        text = text.strip().rstrip(";")
        clause = ", ".join(f"{k} = {_literal(v)}" for k, v in settings.items())
        if INSERT.match(text):
            parts = re.split(r"(?i)\bFORMAT\b", text, maxsplit=1)
            # INSERT … SETTINGS … FORMAT …; an INSERT … VALUES keeps the client's defaults only.
            sql = (
                f"{parts[0]} SETTINGS {clause} FORMAT {parts[1].strip()}"
                if clause and len(parts) == 2
                else text
            )
            if data:
                sql = f"{sql}\n{data.decode()}"
            fmt = "TabSeparated"
        else:
            found = FORMAT.search(text)
            if found:
                fmt, text = found.group(1), text[: found.start()]
            # A server applies URL settings outside the statement; here they become a SETTINGS clause,
            # which only SELECT takes (other statements run with the engine's defaults).
            sql = f"{text} SETTINGS {clause}" if clause and SELECT.match(text) else text
        try:
            with self.lock:
                result = self.engine.query(sql, fmt, params=params)
                out = result.bytes() if result is not None else b""
        except Exception as exc:  # noqa: BLE001 - every engine error becomes the HTTP error ClickHouse sends
            message = str(exc).strip()
            with self.lock:  # chDB hands a failed query's partial output to the next one: drain it
                self.engine.query("SELECT 1", "CSV")
            code = re.match(r"Code: (\d+)", message)
            self._send(
                500,
                (message + "\n").encode(),
                {"X-ClickHouse-Exception-Code": code.group(1) if code else "1"},
            )
            return
        self._send(
            200,
            out,
            {
                "X-ClickHouse-Format": fmt,
                "X-ClickHouse-Timezone": "UTC",
                "X-ClickHouse-Summary": '{"read_rows":"0","written_rows":"0"}',
            },
        )

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "text/plain; charset=UTF-8")
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)


def _form_fields(kind: str, body: bytes) -> dict[str, str]:
    message = BytesParser(policy=default).parsebytes(f"Content-Type: {kind}\r\n\r\n".encode() + body)
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        fields[str(name)] = payload.decode() if isinstance(payload, bytes) else str(payload)
    return fields


def _literal(value: str) -> str:
    if re.fullmatch(r"-?\d+(\.\d+)?", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    args = parser.parse_args()
    Adapter.engine = session.Session(args.path)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Adapter)
    print(f"serving ClickHouse HTTP from chDB on 127.0.0.1:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
