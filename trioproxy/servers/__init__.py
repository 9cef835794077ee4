"""Servers: what accepts connections and hands requests to the faces.

`native` is our HTTP/1.1 server on h11 (the default); `asgi` adapts the faces to ASGI, so that
hypercorn (`hypercorn_server`, for TLS and HTTP/2) or any ASGI server can serve them.
"""
