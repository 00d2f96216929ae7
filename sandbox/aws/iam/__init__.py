"""IAM and STS: authentication (SigV4), the action table, policy evaluation, identities and
resource naming, as AWS does them."""
