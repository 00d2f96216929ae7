"""How the acceptance tests reach the candidate: the environment the pipeline's acceptance stage
gives them (KILN_URL, the header KILN_HEADER that selects the candidate, KILN_VERSION). Where the
name in KILN_URL is not in DNS (Kiln's sandbox), KILN_RESOLVE (`name:port:address`, curl's
--resolve) says which address answers for it and KILN_CA_BUNDLE which CA signed its
certificate."""

import http.client
import json
import os
import socket
import ssl
from urllib.parse import urlsplit

import pytest


class Candidate:
    def __init__(self, environ):
        self.url = urlsplit(environ["KILN_URL"])
        name, _, value = environ.get("KILN_HEADER", "").partition(": ")
        self.headers = {name: value} if value else {}
        self.version = environ.get("KILN_VERSION", "")
        resolve = environ.get("KILN_RESOLVE", "").split(":")
        self.address = resolve[2] if len(resolve) == 3 else None
        self.context = ssl.create_default_context(cafile=environ.get("KILN_CA_BUNDLE"))

    def connection(self):
        host, port = self.url.hostname, self.url.port
        if self.url.scheme == "http":
            return http.client.HTTPConnection(self.address or host, port, timeout=10)
        connection = http.client.HTTPSConnection(host, port, context=self.context, timeout=10)
        if self.address:  # connect to that address, still asking for (and checking) the name
            connection.sock = self.context.wrap_socket(
                socket.create_connection((self.address, port or 443), timeout=10),
                server_hostname=host)
        return connection

    def call(self, method, path, data=None):
        """(status, JSON body) of one request to the candidate."""
        connection = self.connection()
        body = None if data is None else json.dumps(data)
        headers = {**self.headers, "Host": self.url.netloc,
                   **({"Content-Type": "application/json"} if body else {})}
        try:
            connection.request(method, path, body=body, headers=headers)
            answer = connection.getresponse()
            return answer.status, json.loads(answer.read() or b"null")
        finally:
            connection.close()


@pytest.fixture(scope="session")
def candidate():
    if "KILN_URL" not in os.environ:
        pytest.skip("KILN_URL is not set: run by the pipeline's acceptance stage")
    return Candidate(os.environ)
