"""The rpmbuild backend: a generated spec built in a private topdir with its own HOME.

The buildroot is staged by the caller (hard links to the manifest's files), so the spec has no
%prep, %build or %install: rpmbuild only reads the staged tree, compresses and writes the RPM.
Everything rpm reads or writes (macros, topdir, temp files, rpmdb) lives under `work`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from cloud.errors import KilnError
from packager.manifest import Manifest
from packager.spec import MAGIC_RULES, Provenance, build_macros, spec_text


def available() -> bool:
    return shutil.which("rpmbuild") is not None


def macros_file(work: Path, macros: dict[str, str]) -> str:
    """The private ~/.rpmmacros: directories inside `work`, then the build settings."""
    paths = {"_topdir": work, "_builddir": work / "build", "_rpmdir": work / "rpms",
             "_srcrpmdir": work / "srpms", "_specdir": work, "_sourcedir": work,
             "_tmppath": work / "tmp", "_dbpath": work / "rpmdb"}
    lines = [f"%{name} {value}" for name, value in paths.items()]
    lines.append("%_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm")
    lines += [f"%{name} {value}" for name, value in macros.items()]
    return "\n".join(lines) + "\n"


def build(manifest: Manifest, root: Path, work: Path, provenance: Provenance,
          scripts: dict[str, str], epoch: int, compression: str, level: int | None) -> Path:
    """Build the RPM from the staged `root`; return its path inside `work`."""
    home = work / "home"
    for folder in (home, work / "build", work / "rpms", work / "tmp"):
        folder.mkdir(parents=True, exist_ok=True)
    (home / ".rpmmacros").write_text(
        macros_file(work, build_macros(epoch, compression, level)))
    script_files = {}
    for key, text in scripts.items():
        # Without the last newline, as rpm keeps an inline section (fpm's spec has them inline).
        (work / "build" / f"{key}.sh").write_text(text.rstrip("\n").replace("%", "%%"))
        script_files[key] = f"{key}.sh"
    spec = work / f"{manifest.name}.spec"
    spec.write_text(spec_text(manifest, provenance, script_files))
    run(rpmbuild_argv(manifest, spec, root), env=build_env(home, epoch, work))
    built = work / "rpms" / manifest.filename
    if not built.is_file():
        raise KilnError(f"rpmbuild: {manifest.filename} was not produced in {work / 'rpms'}")
    return built


def rpmbuild_argv(manifest: Manifest, spec: Path, root: Path) -> list[str]:
    # --noclean: the buildroot goes with the work dir, removed while the RPM is hashed.
    argv = ["rpmbuild", "-bb", "--quiet", "--noclean", "--buildroot", str(root)]
    if manifest.arch != "noarch":
        argv += ["--target", manifest.arch]
    return [*argv, str(spec)]


def build_env(home: Path, epoch: int, work: Path) -> dict[str, str]:
    """A minimal environment: private HOME, the epoch, C locale, and the small magic database."""
    magic = work / "kiln.magic"
    magic.write_text(MAGIC_RULES)
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "TMPDIR")}
    return {**keep, "HOME": str(home), "SOURCE_DATE_EPOCH": str(epoch), "LC_ALL": "C",
            "TZ": "UTC", "MAGIC": str(magic)}


def run(argv: list[str], env: dict[str, str]) -> None:
    try:
        result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise KilnError(f"{argv[0]}: not found on PATH (install the rpm build tools)") from None
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
        reason = (errors or result.stderr.strip().splitlines() or ["no output"])[-1]
        raise KilnError(f"{argv[0]} failed ({result.returncode}): {reason.strip()}")
