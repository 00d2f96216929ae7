"""The sandbox's AWS outlives its server: a snapshot on disk, restored at the next start.

moto keeps everything in memory, so a server killed (kill -9, a reboot) or stopped with
`sandbox.down` took every account's state with it. Here the server writes a snapshot of all of
moto's backends (IAM, S3 and its objects, EC2, Auto Scaling, ELBv2, CloudFormation, KMS, SSM,
DynamoDB, CloudWatch…, with the sandbox's own marks on them: pending moments, lived-in accounts)
to `aws-state.pickle` in the state dir, whole or not at all (written beside it, then renamed):
half a second after the last request that changed something, and on a clean stop. The next
server loads it before it answers, so a bootstrapped account stays bootstrapped and a published
repository stays published.

moto has no persistence of its own (its maintainers point to pickling its backends, as here);
its models pickle, locks and threads aside, which are made anew on loading. A service whose
state will not pickle is left out of the snapshot and named in `aws-state.json`, which says what
the last start restored and what it could not; `sandbox.up` prints that in one line.

What a snapshot cannot hold is the instances' machines: their processes end with the server
(`sandbox.down` ends them, `sandbox.up` after a crash reaps them). An instance that had a machine
comes back `stopped` (reason Server.InternalError), as EC2 leaves an instance whose host failed,
so Auto Scaling replaces its group's instances from their launch template (the image's layers are
on disk: `machines/layers/`); anything else is the janitor's or a `StartInstances` away.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import sys
import threading
import time
import traceback
from collections import defaultdict
from pathlib import Path

SNAPSHOT = "aws-state.pickle"
REPORT = "aws-state.json"
OFF = "keep-state-off"
FORMAT = 1
QUIET = 0.5  # seconds after the last change before the snapshot is written
PATIENCE = 5  # seconds of changes without a pause before it is written all the same
READS = ("Describe", "List", "Get", "Head", "Search", "Query", "Scan", "BatchGet", "Lookup")


class Busy(Exception):
    """Changing requests did not end in time: the snapshot is written at the next quiet."""


class Gate:
    """Changing requests in flight, and the snapshot that waits for none to be."""

    def __init__(self):
        self._cond = threading.Condition()
        self._active = 0
        self._closed = False
        self.generation = 0  # requests that changed something, so far

    @contextlib.contextmanager
    def request(self, changing: bool):
        if not changing:
            yield
            return
        with self._cond:
            self._cond.wait_for(lambda: not self._closed)
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                self.generation += 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def still(self, patience: float = 1.0, drain: float = 5.0):
        """No changing request in flight while inside: new ones wait once `patience` has
        passed (a steady stream of them must not keep the snapshot out forever). Busy when
        those in flight do not end within `drain` (one may wait on another request to this
        server, which must not wait on the snapshot in turn)."""
        with self._cond:
            self._cond.wait_for(lambda: self._active == 0, timeout=patience)
            self._closed = True
            if not self._cond.wait_for(lambda: self._active == 0, timeout=drain):
                self._closed = False
                self._cond.notify_all()
                raise Busy(f"{self._active} changing requests still in flight")
        try:
            yield
        finally:
            with self._cond:
                self._closed = False
                self._cond.notify_all()


GATE = Gate()
_saver: dict = {"dir": None, "saved": 0, "lock": threading.Lock(), "left_out": {}}


def changing(method: str, body: bytes, headers) -> bool:
    """Whether a request may change state: anything but a read (GET, HEAD, or an operation
    named as one: DescribeInstances, ListObjects, GetItem…)."""
    if method in ("GET", "HEAD", "OPTIONS"):
        return False
    target = headers.get("HTTP_X_AMZ_TARGET", "")
    operation = target.rsplit(".", 1)[-1] if target else _action(body)
    return not (operation and operation.startswith(READS))


def _action(body: bytes) -> str:
    for pair in body[:4096].split(b"&"):
        if pair.startswith(b"Action="):
            return pair[7:].decode(errors="replace")
    return ""


def by_name(cls: type, module: str) -> type:
    """A model class made inside a function, named at its module's top level, so that a
    snapshot can pickle its instances (pickle finds a class by module and name)."""
    cls.__qualname__ = cls.__name__
    setattr(sys.modules[module], cls.__name__, cls)
    return cls


# -- the server's side ---------------------------------------------------------------------------
def keep(state_dir: Path, wanted: bool) -> None:
    """Whether the next server restores and saves the state (`kiln.sandbox.keep_state`)."""
    path = Path(state_dir) / OFF
    if wanted:
        path.unlink(missing_ok=True)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("the sandbox's state is not kept: kiln.sandbox.keep_state is false\n")


def apply(state_dir: Path) -> None:
    """Restore the last snapshot (before the sandbox's users are seeded), then keep saving."""
    if (state_dir / OFF).exists():
        # Not kept: an older snapshot would be stale once this server changes anything.
        (state_dir / SNAPSHOT).unlink(missing_ok=True)
        (state_dir / REPORT).write_text(json.dumps({"snapshot": False, "off": True}) + "\n")
        return
    _saver["dir"] = state_dir
    report = restore(state_dir)
    (state_dir / REPORT).write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    print(f"sandbox state: {summary(report)}", file=sys.stderr, flush=True)
    threading.Thread(target=_loop, daemon=True, name="sandbox-persistence").start()


def _loop() -> None:
    seen, dirty_since = GATE.generation, None
    while True:
        time.sleep(QUIET)
        generation = GATE.generation
        if generation in (_saver["saved"], _saver.get("failed")):
            dirty_since = None
            continue
        dirty_since = dirty_since or time.monotonic()
        # Once quiet (or after PATIENCE of changes without a pause): a crash loses at most that.
        if generation == seen or time.monotonic() - dirty_since > PATIENCE:
            try:
                save()
                dirty_since = None
            except Busy:
                pass  # the next round tries again
            except Exception:  # noqa: BLE001 - the next change tries again; say why meanwhile
                _saver["failed"] = generation
                traceback.print_exc(file=sys.stderr)
        seen = generation


def save() -> None:
    """Write the snapshot now (whole, or not at all), unless nothing changed since the last."""
    state_dir = _saver["dir"]
    if state_dir is None:
        return
    with _saver["lock"], GATE.still():
        generation = GATE.generation
        data = _dumps()
    path = state_dir / SNAPSHOT
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    _fsync_dir(state_dir)
    _saver["saved"] = generation


def save_at_exit() -> None:
    """A clean stop (SIGTERM, `sandbox.down`) writes what the last quiet moment did not."""
    if _saver["dir"] is not None and GATE.generation != _saver["saved"]:
        try:
            save()
        except Busy as error:
            print(f"sandbox state: the last changes are not kept: {error}", file=sys.stderr,
                  flush=True)


def _dumps() -> bytes:
    """moto's backends as one pickle (one, so objects shared across services stay shared)."""
    from moto.core.base_backend import backend_lock

    for attempt in range(5):
        with backend_lock:
            state = _backends()
        state = {name: accounts for name, accounts in state.items()
                 if name not in _saver["left_out"]}
        try:
            body = _pickle(state)
        except RuntimeError:  # a background thread changed a dict mid-pickle: try again
            if attempt == 4:
                raise
            time.sleep(0.05)
            continue
        except (pickle.PicklingError, TypeError, AttributeError):
            _find_unpicklable(state)
            continue
        header = {"format": FORMAT, "moto": _moto_version(), "python": sys.version_info[:2],
                  "left_out": dict(_saver["left_out"]), "saved": time.time(),
                  "where": {name: _WHERE[name] for name in state}}
        return pickle.dumps(header) + body
    raise RuntimeError("the sandbox's state changed under every attempt to save it")


def _backends() -> dict:
    """{service: {account: {region: backend}}} of every backend moto has made."""
    from moto.core.base_backend import BackendDict

    state: dict = {}
    for backend_dict in list(BackendDict._instances):
        accounts = {account: dict(regions) for account, regions in list(backend_dict.items())}
        name = backend_dict.service_name
        if accounts and _where(backend_dict):
            state[name] = accounts
        elif accounts and name not in _saver["left_out"]:
            _saver["left_out"][name] = "moto keeps its backends in no module's variable"
    return state


_WHERE: dict[str, str] = {}  # service -> "module:variable" of its BackendDict


def _where(backend_dict) -> str | None:
    """Where the restoring server finds this BackendDict: a variable of the module of its
    backend class, or of that module's package (moto.ec2.models.ec2_backends)."""
    name = backend_dict.service_name
    if name not in _WHERE:
        module = backend_dict.backend.__module__
        for candidate in (module, module.rsplit(".", 1)[0]):
            found = [attr for attr, value in vars(sys.modules.get(candidate) or object).items()
                     if value is backend_dict]
            if found:
                _WHERE[name] = f"{candidate}:{found[0]}"
                break
    return _WHERE.get(name)


def _find_unpicklable(state: dict) -> None:
    for name, accounts in state.items():
        try:
            _pickle(accounts)
        except (pickle.PicklingError, TypeError, AttributeError, RuntimeError) as error:
            reason = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
            _saver["left_out"][name] = reason
            print(f"sandbox state: {name} is not kept across restarts: {reason}",
                  file=sys.stderr, flush=True)


class _Pickler(pickle.Pickler):
    """moto's models, with their locks and threads made anew (a thread is not restarted: the
    sandbox's own start the loops they ran)."""

    def reducer_override(self, obj):
        kind = type(obj)
        if kind.__module__.startswith("cryptography."):
            return _cryptography(obj)  # KMS keys' material, ACM's certificates
        if isinstance(obj, defaultdict) and (kind is not defaultdict or _named(
                obj.default_factory) in FACTORIES):
            # A lambda's factory named here; a subclass (SSM's ParameterDict) made without the
            # arguments its __init__ wants, its attributes set after.
            factory = FACTORIES.get(_named(obj.default_factory), obj.default_factory)
            return (_defaultdict, (kind, factory), getattr(obj, "__dict__", None), None,
                    iter(obj.items()))
        if kind is _LOCK:
            return threading.Lock, ()
        if kind is _RLOCK:
            return threading.RLock, ()
        if isinstance(obj, threading.Thread):
            return _no_thread, ()
        if isinstance(obj, threading.Condition):
            return threading.Condition, ()
        if isinstance(obj, threading.Event):
            return threading.Event, ()
        return NotImplemented


# defaultdicts of moto's made with a lambda, which pickle cannot name: the same, named here.
def _nested_dict():
    return defaultdict(dict)


FACTORIES = {"SimpleSystemManagerBackend.__init__.<locals>.<lambda>": _nested_dict}


def _named(factory) -> str | None:
    return getattr(factory, "__qualname__", None)


def _defaultdict(kind, factory):
    made = defaultdict.__new__(kind)
    defaultdict.__init__(made, factory)
    return made


def _cryptography(obj):
    """A key or certificate as its DER bytes, loaded again on restore."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization as der

    if isinstance(obj, x509.Certificate):
        return _load_der, ("certificate", obj.public_bytes(der.Encoding.DER))
    if hasattr(obj, "private_bytes"):
        return _load_der, ("private", obj.private_bytes(
            der.Encoding.DER, der.PrivateFormat.PKCS8, der.NoEncryption()))
    if hasattr(obj, "public_bytes"):
        return _load_der, ("public", obj.public_bytes(
            der.Encoding.DER, der.PublicFormat.SubjectPublicKeyInfo))
    return NotImplemented


def _load_der(kind: str, data: bytes):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization as der

    if kind == "certificate":
        return x509.load_der_x509_certificate(data)
    if kind == "private":
        return der.load_der_private_key(data, password=None)
    return der.load_der_public_key(data)


_LOCK = type(threading.Lock())
_RLOCK = type(threading.RLock())


def _no_thread():
    return None


def _pickle(value) -> bytes:
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    return buffer.getvalue()


def _fsync_dir(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _moto_version() -> str:
    import moto

    return moto.__version__


# -- restore --------------------------------------------------------------------------------------
def restore(state_dir: Path) -> dict:
    """Load the snapshot into moto's backends; what was restored and what was not."""
    path = state_dir / SNAPSHOT
    if not path.is_file():
        return {"snapshot": False}
    try:
        header, state = _load(path)
    except Exception as error:  # noqa: BLE001 - any unreadable snapshot: start empty, keep it
        aside = path.with_suffix(".unreadable")
        os.replace(path, aside)
        return {"snapshot": True, "unreadable": f"{type(error).__name__}: {error}"[:200],
                "kept_as": aside.name}
    left_out = dict(header.get("left_out", {}))
    left_out.update(_install(state, header["where"]))
    _saver["left_out"] = {}
    restored = sorted(name for name in state if name not in left_out)
    report = {"snapshot": True, "saved": header["saved"], "services": restored,
              "accounts": sorted({a for name in restored for a in state[name]}),
              "left_out": left_out}
    report.update(_machines_gone(state_dir))
    return report


def _load(path: Path) -> tuple[dict, dict]:
    with open(path, "rb") as handle:
        header = pickle.load(handle)
        if header.get("format") != FORMAT or header.get("moto") != _moto_version():
            raise ValueError(f"written by moto {header.get('moto')} (format "
                             f"{header.get('format')}), this is moto {_moto_version()}")
        return header, pickle.load(handle)


def _install(state: dict, where: dict) -> dict:
    """Put each saved backend where moto looks for it (its module's BackendDict); the services
    that could not be put back, and why."""
    import importlib

    failed = {}
    for name, accounts in state.items():
        try:
            module, variable = where[name].split(":")
            backend_dict = getattr(importlib.import_module(module), variable)
        except (KeyError, ImportError, AttributeError, ValueError) as error:
            failed[name] = f"not restored: {type(error).__name__}: {error}"[:160]
            continue
        for account, regions in accounts.items():
            for region, backend in regions.items():
                dict.__setitem__(backend_dict[account], region, backend)
    return failed


def _machines_gone(state_dir: Path) -> dict:
    """Instances that ran a machine come back stopped, as EC2 leaves those of a failed host;
    the layers of images the snapshot does not hold are freed."""
    from moto.ec2.models import ec2_backends
    from moto.ec2.models.instances import StateReason

    from sandbox.machines import images

    stopped = []
    for _account, regions in list(ec2_backends.items()):
        for backend in list(regions.values()):
            for reservation in backend.reservations.values():
                for instance in reservation.instances:
                    if instance.state not in ("pending", "running", "stopping") or not (
                            instance.key_name or images.stack(state_dir, instance.image_id)):
                        continue  # not running, or no machine behind it: nothing was lost
                    instance._state.name, instance._state.code = "stopped", 80
                    instance.state_reason = StateReason(
                        "Server.InternalError: the sandbox's server stopped, and the "
                        "instance's machine with it", "Server.InternalError")
                    stopped.append(instance.id)
    # An image made in the last moments before a crash has layers but is not in the snapshot.
    known = {image for _a, regions in list(ec2_backends.items())
             for backend in list(regions.values()) for image in list(backend.amis)}
    unknown = [image for image in images.image_ids(state_dir) if image not in known]
    for image in unknown:
        images.release(state_dir, image)
    return {"stopped_instances": stopped, "layers_freed_of": unknown}


def read_report(state_dir: Path) -> dict:
    """What the running server restored at its start (empty before any start)."""
    try:
        return json.loads((Path(state_dir) / REPORT).read_text())
    except (OSError, ValueError):
        return {}


def summary(report: dict) -> str:
    """The report in one line."""
    if not report.get("snapshot"):
        return "no snapshot: a new sandbox"
    if report.get("unreadable"):
        return (f"the snapshot could not be read ({report['unreadable']}), kept as "
                f"{report['kept_as']}: this sandbox starts empty")
    words = [f"restored {len(report['services'])} services of {len(report['accounts'])} "
             f"accounts saved {time.strftime('%H:%M:%S', time.localtime(report['saved']))}"]
    if report.get("stopped_instances"):
        words.append(f"{len(report['stopped_instances'])} instances whose machines ended with "
                     "the server are stopped (Auto Scaling replaces its groups')")
    if report.get("layers_freed_of"):
        words.append(f"{len(report['layers_freed_of'])} images made after the snapshot are "
                     "gone (their layers freed)")
    if report.get("left_out"):
        words.append(f"not kept: {', '.join(sorted(report['left_out']))}")
    return "; ".join(words)
