"""Loaded by Kiln beside every locustfile of a capacity stage (`locust -f this,theirs`).

gevent's loop keeps its own idea of "now", refreshed only when the loop runs. Locust starts
its `--run-time` timer before the loop has run since the imports, so on a busy machine, where
importing gevent, Flask and the locustfile takes seconds, the timer fires that much early and a
1-minute test stops after a few seconds. Refreshing the clock when Locust is initialised, just
before the timer starts, gives the test its whole run time."""

import gevent
from locust import events


@events.init.add_listener
def refresh_clock(**_kwargs):
    gevent.get_hub().loop.update_now()
