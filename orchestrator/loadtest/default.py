"""The capacity stage's load when the app gives no locustfile: each user asks for the app's root
three times for each health check, one request a second, with the header that selects the
candidate (KILN_HEADER); so `users` is the requests per second offered."""

import os

from locust import HttpUser, constant_throughput, task

_HEADER = os.environ.get("KILN_HEADER", "")
HEADERS = dict([_HEADER.split(": ", 1)]) if ": " in _HEADER else {}
HEALTH = os.environ.get("KILN_HEALTH_PATH", "/health")


class Visitor(HttpUser):
    wait_time = constant_throughput(1)

    @task(3)
    def root(self):
        self.client.get("/", headers=HEADERS)

    @task(1)
    def health(self):
        self.client.get(HEALTH, headers=HEADERS, name="health")
