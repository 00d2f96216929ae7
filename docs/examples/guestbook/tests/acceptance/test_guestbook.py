"""The guestbook's acceptance tests: run by the pipeline's acceptance stage against a transient
environment of the release (KILN_URL), their JUnit XML written to KILN_JUNIT_XML."""

import uuid


def test_it_is_the_release_under_test(candidate):
    status, body = candidate.call("GET", "/health")
    assert status == 200
    assert body["status"] == "ok"
    assert body["version"].startswith(candidate.version + "-")


def test_an_entry_posted_is_listed_first(candidate):
    message = f"accepted {uuid.uuid4()}"
    status, made = candidate.call("POST", "/entries", {"name": "pipeline", "message": message})
    assert status == 201
    status, listed = candidate.call("GET", "/entries")
    assert status == 200
    assert listed["entries"][0] == made


def test_an_entry_without_a_message_is_refused(candidate):
    assert candidate.call("POST", "/entries", {"name": "pipeline"}) == (
        400, {"error": "message: required"})


def test_an_unknown_path_is_not_found(candidate):
    assert candidate.call("GET", "/admin")[0] == 404
