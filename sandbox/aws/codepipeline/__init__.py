"""CodePipeline: pipelines whose executions run, stage by stage, as AWS runs them."""
