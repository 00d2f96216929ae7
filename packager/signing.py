"""GPG signing for the yum repository: RPMs (rpmsign) and repomd.xml (a detached signature).

The key is `kiln.repo.gpg_key` (a fingerprint, key id or user id) in the GnuPG home
`kiln.repo.gpg_home` (null: gpg's default, ~/.gnupg). The key must sign without a passphrase
prompt: use a CI secret key without passphrase, or a gpg-agent that already holds it.

Trust: the repository's metadata and packages are believed only when signed by the pinned key,
`kiln.repo.key_fingerprint`, else the fingerprint `invoke bootstrap` recorded (the build stack's
output RepoKeyFingerprint), else that of `kiln.repo.gpg_key` in the local GnuPG home. A configured
fingerprint that is not the recorded one is refused. The key served from the bucket is never
trusted by itself: whoever can write the bucket could serve their own. Values reaching rpm's
macro expansion have `%` escaped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cloud.errors import KilnError

FINGERPRINT = re.compile(r"[0-9A-F]{40}|[0-9A-F]{64}")


@dataclass(frozen=True)
class Signer:
    key: str
    gpg_home: str | None = None

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.gpg_home:
            env["GNUPGHOME"] = self.gpg_home
        return env

    def _run(self, args: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
        try:
            result = subprocess.run(args, env=self._env(), capture_output=True, **kwargs)
        except FileNotFoundError:
            raise KilnError(f"{args[0]} not found: install it (make apt) to {what}") from None
        if result.returncode != 0:
            detail = _last_line(result.stderr)
            raise KilnError(f"cannot {what} with GPG key {self.key!r} "
                            f"(kiln.repo.gpg_key, home {self.gpg_home or '~/.gnupg'}): {detail}")
        return result

    def sign_rpm(self, path: Path) -> None:
        """Add an RPM signature to the file at `path`, in place."""
        # Debian's rpm names a gpg2 binary that does not exist: name gpg explicitly.
        macros = ["--define", f"__gpg {macro_text(shutil.which('gpg') or 'gpg')}",
                  "--define", f"_gpg_name {macro_text(self.key)}",
                  "--define", "_gpg_digest_algo sha256"]
        if self.gpg_home:
            macros += ["--define", f"_gpg_path {macro_text(self.gpg_home)}"]
        self._run(["rpmsign", "--addsign", *macros, str(path)], f"sign {path.name}")

    def sign_detached(self, path: Path) -> Path:
        """Write `<path>.asc`, an armored detached signature of the file."""
        target = path.with_name(path.name + ".asc")
        target.unlink(missing_ok=True)
        self._run(["gpg", "--batch", "--yes", "--armor", "--local-user", self.key,
                   "--output", str(target), "--detach-sign", str(path)], f"sign {path.name}")
        return target

    def verifies(self, data: bytes, signature: bytes) -> bool:
        """True if `signature` is a good detached signature of `data` by this key alone (gpgv
        with a keyring of just its public key: another key in the GnuPG home does not count)."""
        public = self.public_key()
        with tempfile.TemporaryDirectory(prefix="kiln-verify-") as tmp:
            folder = Path(tmp)
            keyring = self._run(["gpg", "--batch", "--dearmor"], "read the public key",
                                input=public).stdout
            (folder / "key.gpg").write_bytes(keyring)
            (folder / "data").write_bytes(data)
            (folder / "data.asc").write_bytes(signature)
            result = subprocess.run(["gpgv", "--homedir", tmp, "--keyring",
                                     str(folder / "key.gpg"), str(folder / "data.asc"),
                                     str(folder / "data")], capture_output=True)
        return result.returncode == 0

    def public_key(self) -> bytes:
        """The armored public key that clients import (RPM-GPG-KEY-kiln)."""
        result = self._run(["gpg", "--batch", "--armor", "--export", self.key],
                           "export the public key")
        if not result.stdout.strip():
            raise KilnError(f"kiln.repo.gpg_key: no key {self.key!r} in "
                            f"{self.gpg_home or '~/.gnupg'}")
        return result.stdout

    def secret_key(self) -> bytes:
        """The armored private key, for a build's secret store (never printed or logged)."""
        result = self._run(["gpg", "--batch", "--armor", "--export-secret-keys",
                            self.fingerprint()], "export the private key")
        if b"PRIVATE KEY BLOCK" not in result.stdout:
            raise KilnError(f"kiln.repo.gpg_key: no private key {self.key!r} in "
                            f"{self.gpg_home or '~/.gnupg'}")
        return result.stdout

    def import_keys(self, armored: bytes) -> None:
        """Import armored keys into this signer's GnuPG home."""
        self._run(["gpg", "--batch", "--import"], "import the key", input=armored)

    def has_secret_key(self) -> bool:
        """True if the GnuPG home holds the private part of the key (it can sign)."""
        result = subprocess.run(["gpg", "--batch", "--with-colons", "--list-secret-keys",
                                 self.key], env=self._env(), capture_output=True)
        return result.returncode == 0 and b"\nsec:" in b"\n" + result.stdout

    def fingerprint(self) -> str:
        """The primary fingerprint of the one key `self.key` names (its public part is enough)."""
        result = self._run(["gpg", "--batch", "--with-colons", "--list-keys", self.key],
                           "look up the key", text=True)
        found = _primary_fingerprints(result.stdout)
        if len(found) != 1:
            raise KilnError(f"kiln.repo.gpg_key: {self.key!r} names {len(found)} keys in "
                            f"{self.gpg_home or '~/.gnupg'}; name one by its fingerprint")
        return found[0]


def from_settings(settings) -> Signer | None:
    """The configured signer, or None when `kiln.repo.sign` is false."""
    repo = settings.repo
    if not repo.sign:
        return None
    if not repo.gpg_key:
        raise KilnError("kiln.repo.gpg_key: not set; name the signing key "
                        "(or set kiln.repo.sign: false for an unsigned repository)")
    if repo.gpg_home and not Path(repo.gpg_home).is_dir():
        raise KilnError(f"kiln.repo.gpg_home: {repo.gpg_home} is not a directory")
    return Signer(repo.gpg_key, repo.gpg_home)


def pinned_fingerprint(settings, recorded: str | None = None,
                       where: str = "the build stack") -> str | None:
    """The fingerprint repository metadata must be signed by; None for an unsigned repository
    (`kiln.repo.sign: false`). `recorded`: what `invoke bootstrap` recorded (in `where`)."""
    repo = settings.repo
    if recorded:
        recorded = check_fingerprint(recorded, f"output RepoKeyFingerprint of {where}")
    if repo.get("key_fingerprint"):
        configured = check_fingerprint(repo.key_fingerprint, "kiln.repo.key_fingerprint")
        if recorded and configured != recorded:
            raise KilnError(f"kiln.repo.key_fingerprint: {configured} is not the repository "
                            f"signing key `invoke bootstrap` recorded ({recorded}, output "
                            f"RepoKeyFingerprint of {where}): fix the setting, or run `invoke "
                            f"bootstrap` to record the new key")
        return configured
    if not repo.sign:
        return None
    if recorded:
        return recorded
    if not repo.gpg_key:
        raise KilnError("kiln.repo.key_fingerprint: not set, and no kiln.repo.gpg_key to take it "
                        "from; pin the repository signing key's fingerprint")
    return Signer(repo.gpg_key, repo.gpg_home).fingerprint()


def check_fingerprint(value: str, field: str) -> str:
    fingerprint = re.sub(r"\s", "", str(value)).upper()
    if not FINGERPRINT.fullmatch(fingerprint):
        raise KilnError(f"{field}: {value!r} is not a full OpenPGP key fingerprint "
                        f"(40 or 64 hex digits)")
    return fingerprint


def public_key(settings, fingerprint: str) -> bytes | None:
    """The public key with `fingerprint` from the local GnuPG home, if it is there."""
    env = {**os.environ, **({"GNUPGHOME": settings.repo.gpg_home}
                            if settings.repo.gpg_home else {})}
    try:
        result = subprocess.run(["gpg", "--batch", "--armor", "--export", fingerprint],
                                env=env, capture_output=True)
    except FileNotFoundError:
        raise KilnError("gpg not found: install it (make apt) to check repository "
                        "signatures") from None
    return result.stdout if result.returncode == 0 and result.stdout.strip() else None


def verify_detached(data: bytes, signature: bytes, key: bytes, fingerprint: str) -> str | None:
    """None when `signature` is a good signature of `data` by the key whose primary fingerprint
    is `fingerprint` (taken from `key`, which may hold other keys too); else why not."""
    with tempfile.TemporaryDirectory(prefix="kiln-verify-") as tmp:
        home = Path(tmp) / "gnupg"
        home.mkdir(mode=0o700)
        for name, body in (("key", key), ("data", data), ("data.asc", signature)):
            (Path(tmp) / name).write_bytes(body)
        gpg = ["gpg", "--batch", "--no-autostart", "--homedir", str(home)]
        subprocess.run([*gpg, "--import", str(Path(tmp) / "key")], capture_output=True)
        result = subprocess.run([*gpg, "--status-fd", "1", "--verify", str(Path(tmp) / "data.asc"),
                                 str(Path(tmp) / "data")], capture_output=True, text=True)
    signers = [line.split()[-1] for line in result.stdout.splitlines()
               if line.startswith("[GNUPG:] VALIDSIG ")]
    if result.returncode == 0 and fingerprint in signers:
        return None
    if signers:
        return f"signed by {', '.join(signers)}, not signed by the pinned key {fingerprint}"
    return f"not a good signature: not signed by the pinned key {fingerprint}"


def package_digest(path: Path) -> str:
    """"<header sha256> <payload digest>" of an RPM: what identifies its content, signed or not
    (a signature changes only the signature header), and what rpm -q reports once installed."""
    with tempfile.TemporaryDirectory(prefix="kiln-rpmdb-") as dbpath:
        result = subprocess.run(["rpm", "--dbpath", dbpath, "-qp", "--nosignature", "--nodigest",
                                 "--qf", "%{SHA256HEADER} %{PAYLOADDIGEST}", str(path)],
                                capture_output=True, text=True)
    found = result.stdout.split()
    if result.returncode != 0 or len(found) != 2 or "(none)" in found:
        raise KilnError(f"{path}: no header and payload digests ({_last_line(result.stderr)})")
    return " ".join(found)


def macro_text(value: str) -> str:
    """`value` as rpm macro text that expands to itself: `%` doubled (`%(…)` runs a shell)."""
    if "\n" in value or "\r" in value:
        raise KilnError(f"{value!r}: a line break cannot reach an rpm macro")
    return value.replace("%", "%%")


def _primary_fingerprints(colons: str) -> list[str]:
    """Primary key fingerprints in gpg --with-colons output (the fpr line after each pub)."""
    found, primary = [], False
    for line in colons.splitlines():
        kind = line.split(":", 1)[0]
        if kind == "pub":
            primary = True
        elif kind == "fpr" and primary:
            found.append(line.split(":")[9])
            primary = False
        elif kind == "sub":
            primary = False
    return found


def _last_line(stderr: bytes | str) -> str:
    text = stderr if isinstance(stderr, str) else stderr.decode(errors="replace")
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"
