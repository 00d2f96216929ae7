"""GPG signing for the yum repository: RPMs (rpmsign) and repomd.xml (a detached signature).

The key is `kiln.repo.gpg_key` (a fingerprint, key id or user id) in the GnuPG home
`kiln.repo.gpg_home` (null: gpg's default, ~/.gnupg). The key must sign without a passphrase
prompt: use a CI secret key without passphrase, or a gpg-agent that already holds it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cloud.errors import KilnError


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
        macros = ["--define", f"__gpg {shutil.which('gpg') or 'gpg'}",
                  "--define", f"_gpg_name {self.key}", "--define", "_gpg_digest_algo sha256"]
        if self.gpg_home:
            macros += ["--define", f"_gpg_path {self.gpg_home}"]
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


def _last_line(stderr: bytes) -> str:
    lines = [line for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"
