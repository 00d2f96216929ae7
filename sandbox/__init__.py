"""The sandbox: a moto server on loopback standing in for AWS, and a local sshd standing in for
the bake instance. Everything that exists only for the sandbox lives in this package."""
