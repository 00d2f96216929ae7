"""Packaging: YAML manifest to RPM, and the yum repository the RPMs are published to."""
