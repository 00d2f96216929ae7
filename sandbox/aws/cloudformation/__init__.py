"""CloudFormation: change sets, updates and resources as AWS applies them."""
