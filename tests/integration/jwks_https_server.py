#!/usr/bin/env python3
"""Serves one directory over HTTPS on 127.0.0.1 (a stand-in identity provider's jwks_uri).

Usage: jwks_https_server.py <port> <dir> <cert.pem> <key.pem>
Each request reads the file again, so the test rotates keys by rewriting it.
"""
import functools
import http.server
import ssl
import sys


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, fmt, *args):
        sys.stderr.write("jwks server: " + (fmt % args) + "\n")


def main():
    port, directory, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    handler = functools.partial(Quiet, directory=directory)
    httpd = http.server.HTTPServer(("127.0.0.1", port), handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    sys.stderr.write("jwks server: listening on %d\n" % port)
    sys.stderr.flush()
    httpd.serve_forever()


if __name__ == "__main__":
    main()
