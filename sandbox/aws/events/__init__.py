"""EventBridge: events reach the rules of the default bus, and a rule's targets get them."""
