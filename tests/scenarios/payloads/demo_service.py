"""The demo's vulnerable service: a tiny HTTP API with a command injection.

usage: demo_service.py PORT_FILE ACCESS_LOG
  listens on 127.0.0.1, writes its port to PORT_FILE, one line per request to ACCESS_LOG
  /health          200 ok
  /status          runs uptime (no shell)
  /lookup?host=H   runs `getent hosts H` through /bin/sh: H is not sanitized
"""

from __future__ import annotations

import http.server
import subprocess
import sys
import urllib.parse
from pathlib import Path


class Api(http.server.BaseHTTPRequestHandler):
    access_log = None

    def do_GET(self) -> None:
        self.access_log.write(f"{self.address_string()} GET {self.path}\n")
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/health":
            body = b"ok\n"
        elif url.path == "/status":
            body = subprocess.run(["uptime"], capture_output=True).stdout
        elif url.path == "/lookup":
            host = urllib.parse.parse_qs(url.query).get("host", [""])[0]
            body = subprocess.run(f"getent hosts {host}", shell=True, capture_output=True).stdout
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def main(port_file: str, access_log: str) -> None:
    Api.access_log = open(access_log, "a", buffering=1)
    server = http.server.HTTPServer(("127.0.0.1", 0), Api)
    Path(port_file).write_text(str(server.server_address[1]))
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
