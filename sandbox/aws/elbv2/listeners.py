"""One listener per port on a load balancer, as Elastic Load Balancing allows.

AWS behaviour mirrored here (https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/
API_CreateListener.html, API_ModifyListener.html): a listener on a port that another listener of
the same load balancer uses fails with DuplicateListener ("A listener with the specified port
already exists"). moto looks the port up among the balancer's listener ARNs, so it never finds
one and accepts any number of listeners on a port; the sandbox's proxies would then serve only
one of them.
"""

from __future__ import annotations

from pathlib import Path


def apply(state_dir: Path) -> None:
    from moto.elbv2 import models
    from moto.elbv2.exceptions import DuplicateListenerError

    backend = models.ELBv2Backend
    original_create, original_modify = backend.create_listener, backend.modify_listener

    def taken(self, balancer_arn: str, port, other_than: str | None = None) -> bool:
        balancer = self.load_balancers.get(balancer_arn)
        listeners = balancer.listeners.values() if balancer is not None else ()
        return any(int(listener.port) == int(port) and listener.arn != other_than
                   for listener in listeners)

    def create_listener(self, load_balancer_arn, protocol, port, *args, **kwargs):
        if taken(self, load_balancer_arn, port):
            raise DuplicateListenerError()
        return original_create(self, load_balancer_arn, protocol, port, *args, **kwargs)

    def modify_listener(self, arn, port=None, *args, **kwargs):
        if port is not None:
            listener = self.describe_listeners(load_balancer_arn=None, listener_arns=[arn])[0]
            if taken(self, listener.load_balancer_arn, port, other_than=arn):
                raise DuplicateListenerError()
        return original_modify(self, arn, port, *args, **kwargs)

    backend.create_listener = create_listener
    backend.modify_listener = modify_listener
