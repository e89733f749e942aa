#!/usr/bin/python3
"""The hello example service: / answers with the version, /healthz with 200."""
import http.server
import os

VERSION = os.environ.get("APP_VERSION", "unknown")
GREETING = os.environ.get("GREETING", "hello")
PORT = int(os.environ.get("PORT", "8080"))
# Setting HEALTHY=false makes /healthz fail: a broken release, for rollout tests.
HEALTHY = os.environ.get("HEALTHY", "true") != "false"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/healthz":
            code, body = (200, "ok\n") if HEALTHY else (500, "unhealthy\n")
        elif self.path == "/":
            code, body = 200, f"{GREETING} from hello {VERSION}\n"
        else:
            code, body = 404, "not found\n"
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        pass


if __name__ == "__main__":
    http.server.ThreadingHTTPServer(("", PORT), Handler).serve_forever()
