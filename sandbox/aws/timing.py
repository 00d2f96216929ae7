"""AWS's timing: what moto makes at once takes a while, scaled so the tests stay fast.

AWS behaviour mirrored here (durations are typical AWS figures, multiplied by the sandbox's time
scale, sandbox/clock.py):
- RunInstances answers `pending`; an instance is `running` after INSTANCE_PENDING seconds.
- CreateImage and CopyImage answer an image id that DescribeImages does not know for a moment
  (InvalidAMIID.NotFound, eventual consistency), then the image is `pending` until it is
  `available` (IMAGE_PENDING for CreateImage, COPY_PENDING for CopyImage); its snapshots are
  `pending` until then too. A copy whose KMS key is disabled or being deleted when it completes
  ends `failed`; CopyImage honours ClientToken: the same token returns the same image, whatever
  became of it (https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html).
- An image's snapshots stay in use for a moment after DeregisterImage (SNAPSHOT_RELEASE):
  DeleteSnapshot fails with InvalidSnapshot.InUse until then.
- A new IAM instance profile is not usable by RunInstances for PROFILE_VISIBLE seconds (IAM is
  eventually consistent): InvalidParameterValue "Invalid IAM Instance Profile name", the answer
  for a profile that does not exist as well.
- Auto Scaling instances are `Pending` until their instance runs and ASG_PENDING has passed, then
  `InService`.
- A target registered with a target group is `initial` until its health check has passed
  HealthyThresholdCount times, HealthCheckIntervalSeconds apart.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from pathlib import Path

from sandbox import clock
from sandbox.aws import seams

INSTANCE_PENDING = 30
IMAGE_VISIBLE = 5
IMAGE_PENDING = 300
COPY_PENDING = 600
ASG_PENDING = 60
SNAPSHOT_RELEASE = 10
PROFILE_VISIBLE = 10


def apply(state_dir: Path) -> None:
    clock.use(state_dir)
    _images()
    _snapshots()
    _instances()
    _autoscaling()
    _target_health()
    _instance_profiles()


# --- images -----------------------------------------------------------------------------------
# CreateImage, CopyImage, DescribeImages and DeregisterImage are sandbox.aws.ec2.images's; the
# functions below are the steps they take for the images' timing.

def _images() -> None:
    from moto.ec2.models.amis import Ami

    def get_state(self):
        state = self.__dict__.get("_sandbox_state", "available")
        ready = self.__dict__.get("_sandbox_ready")
        if state == "pending" and ready and clock.passed(ready):
            state = "failed" if _key_unusable(self) else "available"
            self._sandbox_state = state
        return state

    def set_state(self, value):
        self._sandbox_state = value

    seams.add(Ami, "state", property(get_state, set_state), owner=__name__)
    _release_snapshots_late()


def start_pending(image, pending: float) -> None:
    """A new image (and its snapshot) is pending for `pending` seconds, and listed only after
    IMAGE_VISIBLE."""
    image._sandbox_visible = clock.after(IMAGE_VISIBLE)
    image._sandbox_ready = clock.after(pending)
    image.state = "pending"
    snapshot = getattr(image, "ebs_snapshot", None)
    if snapshot is not None:
        snapshot._sandbox_ready = image._sandbox_ready


_REQUEST = threading.local()


@contextlib.contextmanager
def client_token(token: str | None):
    """moto's CopyImage response handler drops ClientToken: hand it to the backend's CopyImage
    for the length of the request."""
    _REQUEST.client_token = token
    try:
        yield
    finally:
        _REQUEST.client_token = None


def copied_before(backend):
    """The image a CopyImage with this request's ClientToken made already, whatever became of
    it, or None."""
    token = getattr(_REQUEST, "client_token", None)
    tokens = backend.__dict__.setdefault("_sandbox_copy_tokens", {})
    if token and token in tokens and tokens[token] in backend.amis:
        return backend.amis[tokens[token]]
    return None


def copy_pending(backend, image) -> None:
    """A new copy is pending for COPY_PENDING, and its ClientToken names it from now on."""
    start_pending(image, COPY_PENDING)
    token = getattr(_REQUEST, "client_token", None)
    if token:
        backend.__dict__.setdefault("_sandbox_copy_tokens", {})[token] = image.id


def _key_unusable(image) -> bool:
    key_id = _snapshot_key(image)
    if not key_id:
        return False
    from moto.kms.models import kms_backends

    backend = kms_backends[image.ec2_backend.account_id][image.ec2_backend.region_name]
    try:
        key = backend.describe_key(key_id)
    except Exception:  # noqa: BLE001 - a key that is gone cannot encrypt the copy either
        return True
    return not key.enabled or key.key_state != "Enabled"


def _snapshot_key(image) -> str | None:
    snapshot = getattr(image, "ebs_snapshot", None)
    return getattr(snapshot, "kms_key_id", None) if snapshot is not None else None


def visible(images: list, ami_ids) -> list:
    """What DescribeImages lists: images younger than IMAGE_VISIBLE are not there yet (asked for
    by id, only they: InvalidAMIID)."""
    shown = [i for i in images if clock.settled(i, "_sandbox_visible")]
    if ami_ids and images and not shown:
        from moto.ec2.exceptions import InvalidAMIIdError

        raise InvalidAMIIdError(ami_ids)
    return shown


def snapshots_of(backend, ami_id: str) -> list:
    """Before DeregisterImage: the image's snapshots."""
    return [s for s in backend.snapshots.values() if s.from_ami == ami_id]


def release_late(snapshots: list) -> None:
    """After DeregisterImage: its snapshots stay in use for SNAPSHOT_RELEASE."""
    for snapshot in snapshots:
        snapshot._sandbox_released = clock.after(SNAPSHOT_RELEASE)


def _release_snapshots_late() -> None:
    from moto.ec2.exceptions import InvalidSnapshotInUse
    from moto.ec2.models.elastic_block_store import EBSBackend

    def refuse_in_use(moto_delete):
        def delete_snapshot(self, snapshot_id):
            snapshot = self.snapshots.get(snapshot_id)
            if snapshot is not None and not clock.settled(snapshot, "_sandbox_released"):
                raise InvalidSnapshotInUse(snapshot_id, snapshot.from_ami)
            return moto_delete(self, snapshot_id)

        return delete_snapshot

    seams.wrap(EBSBackend, "delete_snapshot", refuse_in_use,
               signature="(self, snapshot_id: str) -> moto.ec2.models.elastic_block_store.Snapshot",
               owner=__name__)


# --- snapshots --------------------------------------------------------------------------------

def _snapshots() -> None:
    from moto.ec2.models.elastic_block_store import Snapshot

    def get_status(self):
        status = self.__dict__.get("_sandbox_status", "completed")
        if status == "completed" and not clock.settled(self, "_sandbox_ready"):
            return "pending"
        return status

    def set_status(self, value):
        self._sandbox_status = value

    seams.add(Snapshot, "status", property(get_status, set_status), owner=__name__)
    seams.replace(Snapshot, "progress",
                  property(lambda self: "100%" if self.status == "completed" else "42%"),
                  signature="(self) -> str", owner=__name__)


# --- instances --------------------------------------------------------------------------------

def _instances() -> None:
    from moto.ec2.models.instances import Instance, InstanceState

    class Pending(InstanceState):
        """What a pending instance shows. moto stops, starts and terminates an instance by
        changing its state in place (`instance._state.name = ...`); those changes land on the
        instance's real state, so a pending instance that is terminated stays terminated."""

        def __init__(self, instance):
            self.__dict__.update(name="pending", code=0, _instance=instance)

        def __setattr__(self, attribute, value):
            instance = self.__dict__["_instance"]
            setattr(instance.__dict__["_sandbox_state"], attribute, value)
            if attribute == "name" and value != "running":
                instance.__dict__["_sandbox_running_at"] = None  # no longer on its way to run

    def get_state(self):
        state = self.__dict__.get("_sandbox_state")
        if state is not None and state.name == "running" and \
                not clock.settled(self, "_sandbox_running_at"):
            return Pending(self)
        return state

    def set_state(self, value):
        if value is not None and value.name == "running" and "_sandbox_state" not in self.__dict__:
            # a new instance starts pending
            self._sandbox_running_at = clock.after(INSTANCE_PENDING)
        elif value is not None and value.name == "running":
            self._sandbox_running_at = None
        self._sandbox_state = value

    seams.add(Instance, "_state", property(get_state, set_state), owner=__name__)


# --- Auto Scaling -----------------------------------------------------------------------------

def _autoscaling() -> None:
    from moto.autoscaling.models import InstanceState

    def get_lifecycle(self):
        state = self.__dict__.get("_sandbox_lifecycle", "InService")
        if state == "InService" and self.instance.state == "pending":
            return "Pending"
        if state == "InService" and not clock.settled(self, "_sandbox_in_service"):
            return "Pending"
        return state

    def set_lifecycle(self, value):
        if "_sandbox_lifecycle" not in self.__dict__:
            self._sandbox_in_service = clock.after(ASG_PENDING)
        self._sandbox_lifecycle = value

    seams.add(InstanceState, "lifecycle_state", property(get_lifecycle, set_lifecycle),
              owner=__name__)


# --- target health ----------------------------------------------------------------------------

def _target_health() -> None:
    from moto.elbv2.models import FakeTargetGroup

    def pending_first(moto_register):
        def register(self, targets):
            registered = self.__dict__.setdefault("_sandbox_registered", {})
            wait = int(self.health_check_interval_seconds) * int(self.healthy_threshold_count)
            running = []
            for target in targets:
                if target["Id"] not in self.targets:
                    registered[target["Id"]] = clock.after(wait)
                if _still_pending(self, target["Id"]):
                    # Auto Scaling registers its instances as they launch; moto asks them to run.
                    self.targets[target["Id"]] = {"Id": target["Id"],
                                                  "Port": target.get("Port", self.port)}
                else:
                    running.append(target)
            return moto_register(self, running)

        return register

    seams.wrap(FakeTargetGroup, "register", pending_first,
               signature="(self, targets: list[dict[str, typing.Any]]) -> None", owner=__name__)


def initial_until_checked(backend, target_group_arn: str, statuses: list) -> list:
    """A step of DescribeTargetHealth (sandbox.aws.elbv2.target_health's): a target registered
    less than HealthyThresholdCount x HealthCheckIntervalSeconds ago is `initial`."""
    from moto.elbv2.models import FakeHealthStatus

    group = backend.target_groups.get(target_group_arn)
    registered = group.__dict__.get("_sandbox_registered", {}) if group else {}
    for target_id, moment in list(registered.items()):
        if clock.passed(moment):  # requests run on threads: another may have dropped it already
            registered.pop(target_id, None)
    return [FakeHealthStatus(s.instance_id, s.port, s.health_check_port, "initial",
                             "Elb.InitialHealthChecking", "Initial health checks in progress")
            if s.status == "healthy" and s.instance_id in registered else s
            for s in statuses]


def _still_pending(group, target_id: str) -> bool:
    instance = group.ec2_backend.get_instance_by_id(target_id) if target_id.startswith("i-") \
        else None
    return instance is not None and instance.state == "pending"


# --- instance profiles ------------------------------------------------------------------------

def _instance_profiles() -> None:
    from moto.ec2.responses import instances as responses

    def not_yet_visible(moto_filter):
        return functools.partial(_filter_iam_instance_profiles, moto_filter)

    seams.wrap(responses, "filter_iam_instance_profiles", not_yet_visible,
               signature="(account_id: str, partition: str, iam_instance_profile_arn: str | None, "
                         "iam_instance_profile_name: str | None) -> Any", owner=__name__)


def _filter_iam_instance_profiles(moto_filter, account_id, partition, iam_instance_profile_arn,
                                  iam_instance_profile_name):
    from moto.ec2.exceptions import EC2ClientError

    given = iam_instance_profile_arn or iam_instance_profile_name
    field = "arn" if iam_instance_profile_arn else "name"
    invalid = EC2ClientError("InvalidParameterValue",
                             f"Value ({given}) for parameter iamInstanceProfile.{field} is "
                             f"invalid. Invalid IAM Instance Profile {field}")
    try:
        profile = moto_filter(account_id, partition, iam_instance_profile_arn,
                              iam_instance_profile_name)
    except EC2ClientError:
        raise
    except Exception:  # noqa: BLE001 - moto's IAM NotFound: AWS answers as EC2 does here
        raise invalid from None
    if profile is not None and not _old_enough(profile.create_date, PROFILE_VISIBLE):
        raise invalid
    return profile


def _old_enough(created, seconds: float) -> bool:
    from datetime import UTC, datetime

    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return (datetime.now(UTC) - created).total_seconds() >= seconds * clock.scale()
