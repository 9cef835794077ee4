"""The HTTP face: routes and dialects over an `Exchange` that a server hands in."""

from __future__ import annotations

from trioproxy.faces.http.common import ClientGone, Exchange
from trioproxy.faces.http.routes import serve_request

__all__ = ["ClientGone", "Exchange", "serve_request"]
