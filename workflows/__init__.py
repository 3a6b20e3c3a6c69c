"""hcloud-flow's workflow side: workflow definitions, submission, fleet jobs, schedules, the CLI."""
