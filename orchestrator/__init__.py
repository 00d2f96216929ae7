"""Rolling out baked images: clusters of server groups behind a load balancer.

A cluster is an app (optionally `-stack`) in one account and region. Its server groups are Auto
Scaling groups `app[-stack]-vNNN`, each with its own launch template and target group on the
cluster's listener. AWS is the only state: groups are found by tag, weights read from the listener.
Every operation computes a plan (orchestrator.plan) and applies it step by step
(orchestrator.apply), checking health between steps.
"""
