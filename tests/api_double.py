"""What the Kubernetes API doubles of the tests share: a request handler that reads a
JSON request and sends a JSON (or text) answer, as the API server does."""

from __future__ import annotations

import json
import urllib.parse
from http.server import BaseHTTPRequestHandler


class JsonHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _send(self, code, body, content_type="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _read(self):
        """(path, query as a dict, JSON body or None) of the request."""
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        return url.path, dict(urllib.parse.parse_qsl(url.query)), body
