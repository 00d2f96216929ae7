"""The sandbox's network: what stands in for Elastic Load Balancing and CloudWatch's evaluation.

Part of it runs in the sandbox's moto server process, next to the state it reads (`supervisor`,
`health`, `metrics`, `alarms`), and the listeners run in a process of their own (`fronts`), fed
what they need by the server over `channel`, so that no client of a load balancer can slow the
AWS API:

- `proxy`: each ALB listener is an HTTP reverse proxy on the load balancer's own loopback
  address (its DNS name in the sandbox), routing by the listener's rules and weighted forwards;
- `front`: a listener's connections, waited on by one thread per listener, its requests served
  by a bounded pool of workers, with the idle and header timeouts and per-client caps;
- `http1`: requests read as an ALB reads them: its header limits, its desync classification,
  bodies a piece at a time;
- `health`: target groups health-check their targets for real (path, port, interval,
  thresholds, matcher);
- `targets`: where a target is (target id → address): `ip` targets on loopback, instances
  through the resolvers the instance machinery adds;
- `metrics`: the ALB metrics the proxies count, published into the sandbox's CloudWatch;
- `alarms`: metric alarms evaluated as CloudWatch does;
- `fronts`: the load balancers' process, every listener's proxy in it;
- `channel`: the server's side of it: started with the server, ended with it however it ends,
  sent the listeners and target groups, told each request's metrics back;
- `supervisor`: one thread in the server that keeps the proxies in step with the listeners and
  runs the others;
- `client`: an app's cluster requested through its load balancer as a browser would (`invoke
  demo`'s last step), with the curl command that does the same.

Times follow `clock`: AWS's periods, intervals and delays scaled by the sandbox's time scale
(at most `clock.FASTEST` times faster than AWS).
"""
