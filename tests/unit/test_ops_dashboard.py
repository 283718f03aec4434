"""The dashboard's server answers its own page on loopback and nothing else: a foreign
Host (DNS rebinding), another site's Origin, a write, a path out of its static folder."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterator

import pytest

from croupier import dashboard
from croupier.stack.process import free_port


@pytest.fixture
def port() -> Iterator[int]:
    port = free_port()
    server = dashboard.serve(port, [f"http://127.0.0.1:{free_port()}/metrics"], {})
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield port
    server.shutdown()
    server.server_close()


def ask(port: int, path: str, method: str = "GET", **headers: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest(method, path, skip_host=True)
    conn.putheader("Host", headers.pop("Host", f"127.0.0.1:{port}"))
    for name, value in headers.items():
        conn.putheader(name, value)
    conn.endheaders()
    answer = conn.getresponse()
    body = answer.read()
    conn.close()
    return answer.status, body


def test_the_page_its_library_and_its_state(port: int) -> None:
    code, page = ask(port, "/")
    assert code == 200 and b"/static/vendor/uPlot.iife.min.js" in page
    code, library = ask(port, "/static/vendor/uPlot.iife.min.js")
    assert code == 200 and library.startswith(b"/*! https://github.com/leeoniya/uPlot (v1.6.32)")
    assert ask(port, "/static/vendor/uPlot.LICENSE")[0] == 200
    code, state = ask(port, "/api/state", Host=f"localhost:{port}")
    assert code == 200 and b'"up": false' in state  # its one endpoint does not answer


def test_the_ways_around_are_refused(port: int) -> None:
    for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1:{port + 1}", ""):
        assert ask(port, "/api/state", Host=host)[0] == 421, host
    assert ask(port, "/api/state", Origin="http://evil.example")[0] == 403
    assert ask(port, "/api/state", Origin=f"http://127.0.0.1:{port}")[0] == 200
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        assert ask(port, "/api/state", method)[0] == 405
    for path in ("/static/../__init__.py", "/static/%2e%2e/__init__.py", "/../../etc/passwd",
                 "/static/vendor/../../__init__.py", "/static/", "/nothing"):  # fmt: skip
        code, body = ask(port, path)
        assert code == 404, path
        assert b"import" not in body
    # Loopback only: the port does not answer on this host's other addresses.
    others = {str(a[4][0]) for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    for address in others - {"127.0.0.1"}:
        with pytest.raises(OSError), socket.create_connection((address, port), timeout=2):
            pass
