"""A real S3-compatible server for tests: moto's ThreadedMotoServer on 127.0.0.1."""

from __future__ import annotations

import logging
import socket

BUCKET = "airrep-test"

logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request access log


class MotoS3:
    """A moto S3 server on a fixed local port that tests can stop and restart (state is kept)."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server = None

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    def stop(self) -> None:
        """Stop serving and close the listening socket, so that new connections are refused
        (moto's own ``stop`` only shuts the serve loop down: connections would queue and hang)."""
        if self._server is not None:
            self._server.stop()
            self._server._server.server_close()
            self._server = None
