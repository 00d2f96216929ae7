"""What kiln.deploy.user_data.environment may hold.

Its values go into the launch template's user data in clear text, which anyone allowed
ec2:DescribeLaunchTemplateVersions or ec2:DescribeInstanceAttribute reads. A secret belongs in
kiln.deploy.user_data.secrets instead (an SSM SecureString parameter or a Secrets Manager secret,
read at boot by the instance's role): an environment name or value that looks like one is
refused, and the refusal never repeats the value.
"""

from __future__ import annotations

import re

SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Parts of a name that say it holds a secret, anywhere in it (DBPASSWORD, CLIENT_SECRET_V2)…
_SECRET_PARTS = ("PASSWORD", "PASSWD", "PASSPHRASE", "SECRET", "TOKEN", "CREDENTIAL",
                 "PRIVATE", "APIKEY")
# …or as a word of their own (DB_PASS, STRIPE_SK, but not PASSENGER_LIMIT or SKU).
_SECRET_WORDS = {"PASS", "PWD", "SK", "CREDS", "SALT"}
# A name ending in KEY (SIGNING_KEY, API_KEY, ACCESS_KEY) is a key, unless it says it is public.
_PUBLIC_KEY_WORDS = {"PUBLIC", "PUBLISHABLE"}
# Values that are secrets whatever their name: a URL with a password in it, well-known key and
# token shapes (AWS access key ids, Stripe, GitHub, GitLab, Slack), a PEM private key.
_SECRET_VALUES = (
    (re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#@\s]*:[^/?#@\s]+@"),
     "a URL with a password (scheme://user:PASSWORD@host)"),
    (re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"), "an AWS access key id"),
    (re.compile(r"\b[sr]k_(live|test)_[0-9A-Za-z]{8,}"), "a Stripe secret key"),
    (re.compile(r"\b(gh[pousr]_[0-9A-Za-z]{20,}|github_pat_\w{20,}|glpat-[\w-]{20,})"),
     "a GitHub or GitLab token"),
    (re.compile(r"\bxox[abpors]-[0-9A-Za-z-]{10,}"), "a Slack token"),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY"), "a private key"),
)


def secret_name(name: str) -> bool:
    """Whether an environment variable's name says it holds a secret."""
    upper = name.upper()
    words = [word for word in upper.split("_") if word]
    if any(part in upper for part in _SECRET_PARTS) or _SECRET_WORDS & set(words):
        return True
    return len(words) > 1 and words[-1] == "KEY" and words[-2] not in _PUBLIC_KEY_WORDS


def secret_value(value: str) -> str | None:
    """What secret a value looks like (None: none)."""
    for pattern, what in _SECRET_VALUES:
        if pattern.search(value):
            return what
    return None


def problem(name, value) -> str | None:
    """Why `name: value` may not be in the environment user data writes (None: it may)."""
    if not isinstance(name, str) or not SHELL_NAME.fullmatch(name):
        return "not a shell variable name (letters, digits and _, not first a digit)"
    if value is not None and not isinstance(value, str | int | float | bool):
        return "expected a string, number or true/false"
    text = "" if value is None else str(value)
    if "\n" in text or "\r" in text:
        return "one line only"
    if secret_name(name):
        return (f"looks like a secret, and user data is readable by anyone who may describe "
                f"the launch template or instance (ec2:DescribeLaunchTemplateVersions): store "
                f"it as an SSM SecureString parameter and name it in "
                f"kiln.deploy.user_data.secrets ({name}: ssm:/<app>/{name.lower()}), which the "
                f"instance's role reads at boot")
    found = secret_value(text)
    if found:
        return (f"its value looks like a secret ({found}; not repeated here), and user data is "
                f"readable by anyone who may describe the launch template or instance: store "
                f"it as an SSM SecureString parameter and name it in "
                f"kiln.deploy.user_data.secrets ({name}: ssm:/<app>/{name.lower()})")
    return None


def check(field: str, environment) -> str | None:
    """The first refusal for a user_data.environment mapping at `field`, as one line."""
    for name, value in (environment or {}).items():
        reason = problem(name, value)
        if reason:
            return f"{field}.{name}: {reason}"
    return None
