"""The test control plane itself: an apiserver whose port was taken between picking it and binding it starts on
another one instead of failing the test that needed it."""

from __future__ import annotations

import socket

import pytest
import testenv

pytestmark = pytest.mark.integration


def test_an_apiserver_whose_port_is_taken_at_its_first_start_moves_to_a_free_one(
        control_plane: testenv.ControlPlane, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        ports = iter([busy])
        real = testenv.free_port
        monkeypatch.setattr(testenv, "free_port", lambda: next(ports, None) or real())

        apiserver = control_plane.add_apiserver("moved")
        try:
            assert apiserver.port != busy
            assert apiserver.ready()
            assert f":{apiserver.port}" in apiserver.kubeconfig.read_text()
        finally:
            apiserver.stop()
            control_plane.apiservers.remove(apiserver)
