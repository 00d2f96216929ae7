"""The guestbook's unit tests (the pipeline's commit stage): the book and its HTTP handler,
on a port of this machine."""

import json
import sys
import threading
import urllib.error
import urllib.request
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "app"))
import server  # noqa: E402


def test_entries_are_listed_newest_first_and_only_the_newest_kept():
    book = server.Book(keep=2)
    for word in ("one", "two", "three"):
        book.add({"name": "ann", "message": word})
    assert [e["message"] for e in book.newest()] == ["three", "two"]
    assert [e["id"] for e in book.newest()] == [3, 2]


@pytest.mark.parametrize("data, error", [
    ({"message": "hi"}, "name: required"),
    ({"name": "ann", "message": "  "}, "message: required"),
    ({"name": "ann", "message": "x" * 281}, "message: longer than 280 characters"),
    (["ann", "hi"], "expected a JSON object"),
])
def test_a_bad_entry_is_refused(data, error):
    with pytest.raises(ValueError, match=error):
        server.Book(keep=5).add(data)


@pytest.fixture
def url():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), server.handler(server.Book(10), "1.0.0-1"))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def call(url, path, data=None):
    body = None if data is None else json.dumps(data).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url + path, data=body)) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_the_service_adds_lists_and_reports_its_version(url):
    assert call(url, "/health") == (200, {"status": "ok", "name": "guestbook",
                                          "version": "1.0.0-1"})
    assert call(url, "/entries", {"name": "ann", "message": "hello"})[0] == 201
    assert call(url, "/entries") == (200, {"entries": [{"id": 1, "name": "ann",
                                                        "message": "hello"}]})
    assert call(url, "/entries", {"name": "ann"}) == (400, {"error": "message: required"})
    assert call(url, "/nothing") == (404, {"error": "not found"})
