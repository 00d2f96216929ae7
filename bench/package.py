"""Benchmark: `invoke package` against plain `rpmbuild -bb` of an equivalent hand-written spec.

Payload: 5,000 files of ~1 KB and one 200 MB random file, generated into a temp dir. Each figure
is the median of three runs (wall-clock seconds); the runs go in rounds, every build once per
round, so a change of machine load (other builds on the same host) hits all of them alike.
Kiln's builds run cold (no recorded source digests: dist/.kiln-cache removed first; a hand
spec's `cp -al` changes the sources' ctime, which also makes Kiln hash them again) and warm
(right after a Kiln build of the same sources). Hand specs run with:
  - Debian's rpmbuild defaults (brp scripts on, default payload),
  - fpm's settings (brp scripts off, gzip -9),
  - Kiln's settings (brp off, Kiln's payload, Kiln's small libmagic database), with `cp -a`
    and with `cp -al` in %install.
Reference, measured on the same kind of machine: fpm 1.17 `-s dir -t rpm` took 25.9 s.

A second payload, `--many 50000` small files (~100 bytes, in folders of 500), is built once each
by Kiln with the rpmbuild backend, Kiln with the fpm backend, and plain `fpm -s dir -t rpm` with
its defaults (`--fpm PATH`, default `fpm` on PATH or the vendored one; `--many 0` skips it).

Usage: .venv/bin/python bench/package.py [--runs 3] [--compression zstd] [--many 50000]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from cloud.settings import validate  # noqa: E402
from packager.build import package  # noqa: E402
from packager.digests import CACHE_DIR  # noqa: E402
from packager.spec import MAGIC_RULES, build_macros  # noqa: E402

FPM_REFERENCE = 25.9
VENDORED_FPM = ROOT.parent / "shared" / "vendor" / "fpm" / "bin" / "fpm"
SMALL_FILES = 5000
BIG_FILE_MB = 200


def make_payload(folder: Path) -> Path:
    payload = folder / "payload"
    for index in range(SMALL_FILES):
        sub = payload / f"d{index % 50:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{index:05d}.txt").write_text(os.urandom(512).hex())  # 1 KB of text
    with open(payload / "big.bin", "wb") as handle:
        for _ in range(BIG_FILE_MB):
            handle.write(os.urandom(1 << 20))
    an_hour_ago = time.time_ns() - 3600 * 10**9  # as in a checkout, not files written just now
    for folder_path, _, names in os.walk(payload):
        for name in names:
            os.utime(os.path.join(folder_path, name), ns=(an_hour_ago, an_hour_ago))
    return payload


def write_manifest(folder: Path) -> Path:
    manifest = folder / "bench-app.yaml"
    manifest.write_text("name: bench-app\nversion: 1.0.0\nsummary: benchmark payload\n"
                        "license: MIT\nfiles:\n  - src: payload\n    dest: /opt/bench-app\n")
    return manifest


def hand_spec(folder: Path, payload: Path, link: bool) -> Path:
    spec = folder / f"hand-{'link' if link else 'copy'}.spec"
    copy = "cp -al" if link else "cp -a"
    spec.write_text(
        "Name: bench-app\nVersion: 1.0.0\nRelease: 1\nSummary: benchmark payload\n"
        "License: MIT\nBuildArch: noarch\n%{?kiln_noauto:AutoReqProv: no}\n\n"
        "%description\nbenchmark payload\n\n%install\n"
        "mkdir -p %{buildroot}/opt\n"
        f"{copy} {payload} %{{buildroot}}/opt/bench-app\n\n"
        "%files\n/opt/bench-app\n")
    return spec


def rpmbuild_run(folder: Path, spec: Path, macros: dict[str, str], magic: bool = False) -> None:
    home = folder / "home"
    top = folder / "top"
    home.mkdir(exist_ok=True)
    lines = [f"%_topdir {top}", f"%_dbpath {folder / 'rpmdb'}"]
    lines += [f"%{name} {value}" for name, value in macros.items()]
    (home / ".rpmmacros").write_text("\n".join(lines) + "\n")
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "SOURCE_DATE_EPOCH": "0",
           "LC_ALL": "C"}
    if magic:  # Kiln's small libmagic database (see packager/spec.py)
        (folder / "kiln.magic").write_text(MAGIC_RULES)
        env["MAGIC"] = str(folder / "kiln.magic")
    # --noclean as Kiln runs it: the buildroot goes with `top` below either way.
    subprocess.run(["rpmbuild", "-bb", "--quiet", "--noclean", str(spec)], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(["rm", "-rf", str(top)], check=True)


def kiln_run(folder: Path, manifest: Path, compression: str) -> None:
    config = folder / "kiln-bench.yaml"
    config.write_text(f"kiln:\n  dist: {folder / 'dist'}\n  package:\n"
                      f"    backend: rpmbuild\n    compression: {compression}\n"
                      "    source_date_epoch: 0\n")
    invoke = Path(sys.executable).with_name("invoke")
    subprocess.run([str(invoke), "-f", str(config), "package", "--manifest", str(manifest)],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def children_cpu() -> float:
    """CPU seconds used so far by this process and its finished children."""
    return sum(usage.ru_utime + usage.ru_stime
               for usage in (resource.getrusage(resource.RUSAGE_SELF),
                             resource.getrusage(resource.RUSAGE_CHILDREN)))


def kiln_function(folder: Path, manifest: Path, compression: str) -> None:
    """The same build through packager.build.package(), without the CLI's start-up."""
    raw = yaml.safe_load((ROOT / "invoke.yaml").read_text())["kiln"]
    raw["dist"] = str(folder / "dist")
    raw["package"].update(backend="rpmbuild", compression=compression, source_date_epoch=0)
    with contextlib.redirect_stderr(io.StringIO()):
        package(validate(raw, ["bench"]), manifest)


class Timings:
    """Wall-clock and CPU seconds (user + system, all child processes) of each build's runs."""

    def __init__(self):
        self.walls: dict[str, list[float]] = {}
        self.cpus: dict[str, list[float]] = {}

    def run(self, label: str, action) -> None:
        os.sync()  # the previous build's 200 MB written back first, so no run pays for another's
        start, cpu = time.perf_counter(), children_cpu()
        action()
        self.walls.setdefault(label, []).append(time.perf_counter() - start)
        self.cpus.setdefault(label, []).append(children_cpu() - cpu)

    def median(self, label: str) -> tuple[float, float]:
        return statistics.median(self.walls[label]), statistics.median(self.cpus[label])

    def show(self) -> None:
        for label, walls in self.walls.items():
            wall, cpu = self.median(label)
            print(f"  {label:<48} {wall:7.2f} s wall  {cpu:7.2f} s cpu   "
                  f"(wall runs: {', '.join(f'{t:.2f}' for t in walls)})", flush=True)


def cold(folder: Path, action):
    """`action` without recorded source digests."""
    def run():
        subprocess.run(["rm", "-rf", str(folder / "dist" / CACHE_DIR)], check=True)
        action()
    return run


def report(timings: Timings, kiln_labels: list[str], best: str) -> None:
    cold_cli = timings.median(kiln_labels[0])
    print(f"invoke package (cold) vs fpm reference ({FPM_REFERENCE} s): "
          f"{FPM_REFERENCE / cold_cli[0]:.1f}x faster (goal >= 2x)")
    reference = timings.median(best)
    for label in kiln_labels:
        figures = timings.median(label)
        print(f"{label} vs best hand-tuned rpmbuild, same settings: "
              f"{figures[0] / reference[0]:.2f}x wall, {figures[1] / reference[1]:.2f}x cpu "
              "(goal <= 1.10x)")


def make_many(folder: Path, count: int) -> Path:
    tree = folder / "many"
    for index in range(count):
        sub = tree / f"d{index // 500:03d}"
        if index % 500 == 0:
            sub.mkdir(parents=True)
        (sub / f"f{index:05d}.txt").write_text(f"{index:05d} " + "x" * 90 + "\n")
    (folder / "many.yaml").write_text("name: many-app\nversion: 1.0.0\nsummary: many files\n"
                                      "license: MIT\nfiles:\n  - src: many\n"
                                      "    dest: /opt/many-app\n")
    return folder / "many.yaml"


def many_files(folder: Path, count: int, fpm_command: str, compression: str) -> None:
    """One build each of the many-small-files tree: Kiln (both backends) and plain fpm."""
    print(f"payload 2: {count} files of ~100 bytes", flush=True)
    manifest = make_many(folder, count)
    raw = yaml.safe_load((ROOT / "invoke.yaml").read_text())["kiln"]
    raw["dist"] = str(folder / "dist-many")
    timings = Timings()
    for backend in ("rpmbuild", "fpm"):
        raw["package"].update(backend=backend, compression=compression, source_date_epoch=0,
                              fpm=fpm_command)
        settings = validate(raw, ["bench"])
        with contextlib.redirect_stderr(io.StringIO()):
            timings.run(f"package() {backend} backend ({compression})",
                        lambda settings=settings: package(settings, manifest))
    out = folder / "plain-fpm.rpm"
    timings.run("plain fpm -s dir -t rpm (its defaults)", lambda: subprocess.run(
        [fpm_command, "-s", "dir", "-t", "rpm", "-n", "many-app", "-v", "1.0.0", "--force",
         "--package", str(out), "--workdir", str(folder), "-C", str(folder), "--",
         "many/=/opt/many-app"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "HOME": str(folder)}))
    timings.show()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--compression", default="zstd", choices=("zstd", "gzip", "xz", "none"))
    parser.add_argument("--many", type=int, default=50_000)
    parser.add_argument("--fpm", default=shutil.which("fpm") or str(VENDORED_FPM))
    parser.add_argument("--skip-references", action="store_true",
                        help="skip the fpm-settings and Debian-defaults hand specs (slow)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kiln-bench-") as temp:
        folder = Path(temp)
        print(f"payload: {SMALL_FILES} files of ~1 KB + one {BIG_FILE_MB} MB random file",
              flush=True)
        payload = make_payload(folder)
        manifest = write_manifest(folder)
        kiln_macros = {**build_macros(0, args.compression, None), "kiln_noauto": "1"}
        fpm_macros = {"__os_install_post": "%{nil}", "_binary_payload": "w9.gzdio",
                      "kiln_noauto": "1"}
        copy_spec, link_spec = hand_spec(folder, payload, False), hand_spec(folder, payload, True)
        cli = lambda: kiln_run(folder, manifest, args.compression)  # noqa: E731
        function = lambda: kiln_function(folder, manifest, args.compression)  # noqa: E731
        best = "rpmbuild hand spec, Kiln settings, cp -al"
        kiln = {f"invoke package ({args.compression}), cold": cold(folder, cli),
                f"invoke package ({args.compression}), warm": cli,
                f"package() ({args.compression}), warm": function,
                f"package() ({args.compression}), cold": cold(folder, function)}
        builds = {best: lambda: rpmbuild_run(folder, link_spec, kiln_macros, True), **kiln}
        slower = {"rpmbuild hand spec, Kiln settings, cp -a":
                  lambda: rpmbuild_run(folder, copy_spec, kiln_macros, True)}
        if not args.skip_references:
            slower["rpmbuild hand spec, fpm settings (gzip-9)"] = \
                lambda: rpmbuild_run(folder, copy_spec, fpm_macros)
            slower["rpmbuild hand spec, Debian defaults"] = \
                lambda: rpmbuild_run(folder, copy_spec, {})
        print(f"load average at the start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print(f"median of {args.runs}, in rounds (wall clock):", flush=True)
        timings = Timings()
        for group in (builds, slower):  # the slow ones apart: they would only add noise
            for _ in range(args.runs):
                for label, action in group.items():
                    timings.run(label, action)
        timings.show()
        report(timings, list(kiln), best)
        if args.many:
            many_files(folder, args.many, args.fpm, args.compression)
        print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
