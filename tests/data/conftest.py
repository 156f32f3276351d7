"""Fixtures for the data tests: small CIFAR layouts, a loopback HTTP server, the real data root.

The synthetic-data helpers live in tests/data_helpers.py so that other test folders can use them."""
import functools
import http.server
import threading

import pytest

from data_helpers import require_data, small_spec
from tinycomp.data import CIFAR10, CIFAR100


@pytest.fixture
def small10():
    return small_spec(CIFAR10)


@pytest.fixture
def small100():
    return small_spec(CIFAR100)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_server(tmp_path):
    """Serve ``tmp_path / "srv"`` on 127.0.0.1; yields (folder, base URL)."""
    served = tmp_path / "srv"
    served.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="session")
def cifar10_root():
    """The real CIFAR-10 data root (skips, or fails under TINYCOMP_REQUIRE_DATA=1, when absent)."""
    return require_data("cifar10")
