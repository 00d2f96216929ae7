"""One listener per port on a load balancer, as Elastic Load Balancing allows.

AWS behaviour mirrored here (https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/
API_CreateListener.html, API_ModifyListener.html): a listener on a port that another listener of
the same load balancer uses fails with DuplicateListener ("A listener with the specified port
already exists"). moto looks the port up among the balancer's listener ARNs, so it never finds
one and accepts any number of listeners on a port; the sandbox's proxies would then serve only
one of them.

This module owns CreateListener and ModifyListener; their other steps are the forward-action
quota (sandbox.aws.quotas) and the load balancers' proxies (sandbox.aws.elbv2.load_balancers).
"""

from __future__ import annotations

from pathlib import Path

from sandbox.aws import quotas, seams
from sandbox.aws.elbv2 import load_balancers


def apply(state_dir: Path) -> None:
    from moto.elbv2.models import ELBv2Backend

    seams.wrap(ELBv2Backend, "create_listener", _create_listener,
               signature="(self, load_balancer_arn: str, protocol: str, port: str, ssl_policy: "
                         "str, certificate: str | None, actions: list[dict[str, typing.Any]], "
                         "alpn_policy: list[str] | None = None, tags: list[dict[str, str]] | "
                         "None = None) -> moto.elbv2.models.FakeListener", owner=__name__)
    seams.wrap(ELBv2Backend, "modify_listener", _modify_listener,
               signature="(self, arn: str, port: str | None = None, protocol: str | None = None, "
                         "ssl_policy: str | None = None, certificates: list[dict[str, "
                         "typing.Any]] | None = None, actions: list[dict[str, typing.Any]] | "
                         "None = None) -> moto.elbv2.models.FakeListener", owner=__name__)


def _taken(backend, balancer_arn: str, port, other_than: str | None = None) -> bool:
    balancer = backend.load_balancers.get(balancer_arn)
    listeners = balancer.listeners.values() if balancer is not None else ()
    return any(int(listener.port) == int(port) and listener.arn != other_than
               for listener in listeners)


def _create_listener(moto):
    def create_listener(self, load_balancer_arn, protocol, port, *args, **kwargs):
        # The port first, then moto's (which checks the actions, quotas included), then the
        # balancer's proxies follow the listeners.
        if _taken(self, load_balancer_arn, port):
            from moto.elbv2.exceptions import DuplicateListenerError

            raise DuplicateListenerError()
        listener = moto(self, load_balancer_arn, protocol, port, *args, **kwargs)
        load_balancers.reconcile()
        return listener

    return create_listener


def _modify_listener(moto):
    def modify_listener(self, arn, port=None, protocol=None, ssl_policy=None, certificates=None,
                        actions=None):
        # The port, then the forward actions' quota (moto checks no actions here), then moto's,
        # then the balancer's proxies follow the listeners.
        if port is not None:
            listener = self.describe_listeners(load_balancer_arn=None, listener_arns=[arn])[0]
            if _taken(self, listener.load_balancer_arn, port, other_than=arn):
                from moto.elbv2.exceptions import DuplicateListenerError

                raise DuplicateListenerError()
        quotas.check_forward(actions or [])
        listener = moto(self, arn, port, protocol, ssl_policy, certificates, actions)
        load_balancers.reconcile()
        return listener

    return modify_listener
