"""KMS, where moto differs from AWS."""
