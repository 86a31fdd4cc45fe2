"""Bearer-token authentication read from a file, re-read whenever the file changes.

Projected service-account tokens are rotated by the kubelet (an atomic swap of the mounted file), so a token
read once at start-up expires within the hour. The file is checked on every request; it is read again only
when its identity (inode, size, modification time) changes.
"""

from __future__ import annotations

import os
import threading

import requests
from requests.auth import AuthBase

from climatik.prom.errors import PromAuthError


class BearerTokenFile(AuthBase):
    """A `requests` auth that sends `Authorization: Bearer <token>` with the token taken from a file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = os.fspath(path)
        self._lock = threading.Lock()
        self._identity: tuple[int, int, int, int] | None = None
        self._token = ""

    @property
    def path(self) -> str:
        return self._path

    def token(self) -> str:
        """The current token; raises `PromAuthError` when the file cannot be read or is empty."""
        try:
            with self._lock:
                st = os.stat(self._path)
                identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
                if identity != self._identity:
                    with open(self._path, encoding="utf-8") as f:
                        self._token = f.read().strip()
                    self._identity = identity
                token = self._token
        except OSError as exc:
            raise PromAuthError(f"cannot read bearer token file {self._path}: {exc.strerror or exc}") from exc
        if not token:
            raise PromAuthError(f"bearer token file {self._path} is empty")
        return token

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self.token()}"
        return r
