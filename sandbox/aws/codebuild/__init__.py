"""CodeBuild: builds that run their buildspec on a sandbox machine."""
