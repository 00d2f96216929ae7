"""The guestbook's load for the pipeline's capacity stage: visitors read the newest entries and,
one time in five, sign. Locust's host is KILN_URL; each request carries KILN_HEADER, which
selects the candidate behind the stack's load balancer."""

import os

from locust import HttpUser, constant_throughput, task

NAME, _, VALUE = os.environ.get("KILN_HEADER", "").partition(": ")
HEADERS = {NAME: VALUE} if VALUE else {}


class Visitor(HttpUser):
    wait_time = constant_throughput(2)  # two requests a second per user, at most

    @task(4)
    def read(self):
        self.client.get("/entries", headers=HEADERS, name="list")

    @task(1)
    def sign(self):
        self.client.post("/entries", json={"name": "load", "message": "hello from Locust"},
                         headers=HEADERS, name="sign")
