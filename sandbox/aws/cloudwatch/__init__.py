"""CloudWatch: alarm types and statistics as AWS computes them."""
