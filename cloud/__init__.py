"""The plumbing every Kiln step shares: settings, errors, console output, AWS sessions, targets
and tags."""
