"""Elastic Load Balancing v2: balancers, listeners and target health that carry real traffic."""
