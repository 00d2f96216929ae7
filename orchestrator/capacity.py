"""The capacity stage's load test: Locust, headless, for a bounded time against the candidate
environment, from the app's locustfile or Kiln's default (orchestrator/loadtest/default.py),
its figures read from Locust's CSV statistics and held against the stage's thresholds.

    figures = run(aws, stage, env, workdir)     # {"requests", "rps", "p95_ms", …}
    breaches(figures, thresholds)               # [] when every threshold holds
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

from cloud.console import say
from cloud.errors import KilnError
from cloud.inputs import human, seconds

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LOCUSTFILE = ROOT / "orchestrator" / "loadtest" / "default.py"
CLOCK = ROOT / "orchestrator" / "loadtest" / "kiln_clock.py"
DEFAULTS = {"users": 10, "spawn_rate": 10, "duration": "1m"}
# The thresholds a stage may set, and how each figure is held against it.
THRESHOLDS = {"min_rps": ("rps", "at least"), "max_p95_ms": ("p95_ms", "at most"),
              "max_p99_ms": ("p99_ms", "at most"),
              "max_error_percent": ("error_percent", "at most")}
DEFAULT_THRESHOLDS = {"max_error_percent": 1}
PREFIX = "capacity"  # Locust's --csv prefix and the HTML report's name
REPORTS = (f"{PREFIX}_stats.csv", f"{PREFIX}_failures.csv", f"{PREFIX}.html")


def locust() -> str:
    beside = Path(sys.executable).parent / "locust"
    found = str(beside) if beside.exists() else shutil.which("locust")
    if not found:
        raise KilnError("capacity: Locust is not installed (it comes with Kiln: `make setup`)")
    return found


def duration_of(stage) -> int:
    return seconds(stage.get("duration", DEFAULTS["duration"]), f"stage {stage.name}: duration")


def command(aws, stage, url: str, workdir: Path) -> list[str]:
    """`locust --headless …` for the stage: Kiln's clock fix first, in the sandbox its name
    resolution, then the locustfile."""
    files = [str(CLOCK)]
    if aws.sandbox:  # by path: importing it here would bring Locust's gevent into Kiln
        files.append(str(ROOT / "sandbox" / "network" / "locust_resolve.py"))
    theirs = stage.get("locustfile")
    files.append(str(ROOT / theirs) if theirs else str(DEFAULT_LOCUSTFILE))
    if theirs and not (ROOT / theirs).is_file():
        raise KilnError(f"stage {stage.name}: locustfile {theirs}: no such file")
    duration = duration_of(stage)
    return [locust(), "-f", ",".join(files), "--headless", "--only-summary",
            "--users", str(stage.get("users", DEFAULTS["users"])),
            "--spawn-rate", str(stage.get("spawn_rate", DEFAULTS["spawn_rate"])),
            "--run-time", f"{duration}s", "--stop-timeout", "10", "--host", url.rstrip("/"),
            "--csv", str(workdir / PREFIX), "--html", str(workdir / f"{PREFIX}.html"),
            "--exit-code-on-error", "0"]  # errors are a figure the thresholds judge


def run(aws, stage, env: dict, workdir: Path) -> dict:
    """Run the load test; its figures (the whole run's aggregate)."""
    argv = command(aws, stage, env["KILN_URL"], workdir)
    duration = duration_of(stage)
    say(f"  $ locust --headless --users {argv[argv.index('--users') + 1]} --run-time "
        f"{human(duration)} -f {stage.get('locustfile') or 'the default locustfile'} "
        f"(KILN_URL={env['KILN_URL']})")
    limit = duration + 120  # imports, ramp-up and the stop timeout, with room to spare
    try:
        done = subprocess.run(argv, cwd=ROOT, env=env, timeout=limit, stdout=sys.stderr)
    except subprocess.TimeoutExpired:
        raise KilnError(f"stage {stage.name}: locust ran past {human(limit)}") from None
    if done.returncode != 0:
        raise KilnError(f"stage {stage.name}: locust exited {done.returncode}")
    return figures(workdir / f"{PREFIX}_stats.csv")


def figures(stats: Path) -> dict:
    """The Aggregated row of Locust's stats CSV: requests, failures, requests/s, latencies."""
    try:
        with open(stats, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as error:
        raise KilnError(f"capacity: Locust wrote no statistics ({error.strerror})") from None
    total = next((r for r in rows if r.get("Name") == "Aggregated"), None)
    if total is None:
        raise KilnError(f"capacity: {stats.name} has no Aggregated row")
    requests, failures = int(total["Request Count"]), int(total["Failure Count"])
    return {"requests": requests, "failures": failures,
            "rps": round(float(total["Requests/s"]), 2),
            "p50_ms": _number(total["50%"]), "p95_ms": _number(total["95%"]),
            "p99_ms": _number(total["99%"]),
            "error_percent": round(100 * failures / requests, 2) if requests else None}


def _number(text: str) -> float | None:
    return None if text in ("", "N/A") else float(text)


def breaches(found: dict, thresholds: dict) -> list[str]:
    """Each threshold the figures miss, said as `p95 812ms (at most 500)`; no requests at all
    is a breach of every one (no evidence is no pass)."""
    if not found.get("requests"):
        return ["no request was answered or failed: no figures to judge"]
    missed = []
    for key, limit in thresholds.items():
        figure, way = THRESHOLDS[key]
        value = found.get(figure)
        held = value is not None and (value >= limit if way == "at least" else value <= limit)
        if not held:
            missed.append(f"{figure} {value} ({way} {limit})")
    return missed
