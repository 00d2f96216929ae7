"""Rolling out baked images: clusters of server groups behind a load balancer.

A cluster is an app (optionally `-stack`) in one account and region. Its server groups are Auto
Scaling groups `app[-stack]-vNNN`, each with its own launch template and target group on the
cluster's listener. AWS is the only state: groups are found by tag, weights read from the listener.
Every operation computes a plan (orchestrator.plan) and applies it step by step
(orchestrator.apply), checking health between steps.

History is in each group's tags (see orchestrator.cluster): `kiln:replaces`, set at creation, names
the group that served when it was created; `kiln:state` says where it is in its life (creating,
canary, active) or how it ended (disabled = replaced, rolled-back, failed). Rollback and teardown
read only these; an operation interrupted midway can be finished or undone from them and the
listener's weights.
"""
