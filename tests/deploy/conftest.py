"""The session's real Triton server (tests/helpers/triton.py): started once, on 127.0.0.1 free
ports, when a test asks for it; skipped with the reason when .ci/triton-setup.sh has not made
its environment. A failing test that used it gets the server's log as a report section."""
from __future__ import annotations

import pytest

from tests.helpers.triton import TritonServer, find_server


@pytest.fixture(scope="session")
def triton_server(tmp_path_factory):
    found = find_server()
    if isinstance(found, str):
        pytest.skip(found)
    root, bin_dir = found
    server = TritonServer(root, bin_dir, tmp_path_factory.mktemp("triton"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    server = getattr(item, "funcargs", {}).get("triton_server")
    if rep.failed and isinstance(server, TritonServer):
        rep.sections.append(("tritonserver log (tail)", server.log()))
