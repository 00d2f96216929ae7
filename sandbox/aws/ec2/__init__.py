"""EC2: images, instances, security groups and launch templates, as AWS behaves."""
