"""AWS sessions for the accounts Kiln works in, with retries and a count of API calls."""

from __future__ import annotations

import collections
import copy
import os
import threading
from dataclasses import dataclass, field

import boto3
import botocore.loaders
import botocore.session
from botocore.config import Config
from botocore.credentials import RefreshableCredentials
from botocore.exceptions import BotoCoreError, ClientError

from cloud.errors import KilnError
from cloud.settings import Settings


@dataclass
class ApiCalls:
    """Counts every AWS operation made through any Kiln session (retries not counted twice)."""

    by_operation: collections.Counter = field(default_factory=collections.Counter)

    @property
    def total(self) -> int:
        return sum(self.by_operation.values())

    def record(self, model=None, **_ignored) -> None:
        if model is not None:
            self.by_operation[f"{model.service_model.service_name}:{model.name}"] += 1


class _Paths(list):
    """A loader's search paths: boto3 appends its own folder each time a Session is made."""

    def append(self, path) -> None:
        if path not in self:
            super().append(path)


_loader: botocore.loaders.Loader | None = None
_loader_lock = threading.Lock()


def _shared_loader() -> botocore.loaders.Loader:
    global _loader
    with _loader_lock:
        if _loader is None:
            _loader = botocore.loaders.create_loader()
            _loader._search_paths = _Paths(_loader.search_paths)
        return _loader


def new_session(core: botocore.session.Session | None = None, **kwargs) -> boto3.Session:
    """A boto3 session whose service models come from the process's one loader, which keeps
    what it parsed: a session of its own would parse botocore's JSON models again (about a
    quarter of a second for EC2, STS and ELB) for every account a command reaches."""
    core = core or botocore.session.Session()
    core.register_component("data_loader", _shared_loader())
    return boto3.Session(botocore_session=core, **kwargs)


class Aws:
    """One account's boto3 session; clients are cached per service and region."""

    def __init__(self, settings: Settings, session: boto3.Session, account_name: str,
                 account_id: str, calls: ApiCalls | None = None):
        self.settings = settings
        self.session = session
        self.account_name = account_name
        self.account_id = account_id
        self.calls = calls or ApiCalls()
        self.region = settings.aws.region
        self._clients: dict[tuple[str, str], object] = {}
        session.events.register("before-call", self.calls.record)

    @property
    def sandbox(self) -> bool:
        return self.settings.target == "sandbox"

    def client(self, service: str, region: str | None = None):
        key = (service, region or self.region)
        if key not in self._clients:
            retries = {"mode": self.settings.aws.retry_mode,
                       "max_attempts": self.settings.aws.max_attempts}
            self._clients[key] = self.session.client(
                service, region_name=key[1], config=Config(retries=retries))
        return self._clients[key]

    def with_settings(self, settings: Settings) -> Aws:
        """This session (same account, clients and call count) under other settings: an
        app's or a stack's (cloud.apps.for_app)."""
        other = copy.copy(self)
        other.settings = settings
        return other

    def account(self, name: str) -> Aws:
        """A session in the named account: this one, or one reached by AssumeRole."""
        if name == self.account_name:
            return self
        spec = account_spec(self.settings, name)
        if not spec.role:
            raise KilnError(f"kiln.accounts.{name}.role: not set, so Kiln cannot reach account "
                            f"{name} ({spec.id}) from {self.account_name}")
        arn = f"arn:aws:iam::{spec.id}:role/{spec.role}"
        return self._assumed(name, arn, spec.external_id)

    def admin(self, name: str) -> Aws:
        """A session with the rights to bootstrap the named account (its profile or admin role)."""
        if name == self.account_name:
            return self
        spec = account_spec(self.settings, name)
        if spec.profile:
            session = new_session(profile_name=spec.profile, region_name=self.region)
            return Aws(self.settings, session, name, spec.id, self.calls)
        if not spec.admin_role:
            raise KilnError(f"kiln.accounts.{name}: set profile or admin_role to bootstrap it")
        return self._assumed(name, f"arn:aws:iam::{spec.id}:role/{spec.admin_role}", None)

    def _assumed(self, name: str, arn: str, external_id: str | None) -> Aws:
        """A session whose role credentials botocore renews before they expire (they last an
        hour; long teardowns and multi-region promotions outlive them)."""
        params = {"RoleArn": arn, "RoleSessionName": f"kiln-{self.account_name}-to-{name}"}
        if external_id:
            params["ExternalId"] = external_id
        sts = self.client("sts")

        def fetch() -> dict:
            try:
                creds = sts.assume_role(**params)["Credentials"]
            except (ClientError, BotoCoreError) as error:
                raise KilnError(f"cannot assume {arn} for account {name}: {error}") from None
            return {"access_key": creds["AccessKeyId"], "secret_key": creds["SecretAccessKey"],
                    "token": creds["SessionToken"],
                    "expiry_time": creds["Expiration"].isoformat()}

        credentials = RefreshableCredentials.create_from_metadata(fetch(), fetch, "assume-role")
        core = botocore.session.Session()
        core._credentials = credentials  # a botocore session given ready-made credentials
        session = new_session(core, region_name=self.region)
        return Aws(self.settings, session, name, account_spec(self.settings, name).id, self.calls)


def account_spec(settings: Settings, name: str) -> Settings:
    try:
        return settings.accounts[name]
    except KeyError:
        known = ", ".join(sorted(settings.accounts)) or "none"
        raise KilnError(f"unknown account {name!r}: kiln.accounts lists {known}") from None


def endpoint_url() -> str | None:
    """The endpoint botocore will use instead of AWS's, if any (the sandbox sets it)."""
    return os.environ.get("AWS_ENDPOINT_URL")
