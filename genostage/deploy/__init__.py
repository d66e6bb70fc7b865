"""Deployment: container images for tools (:mod:`.image`) and AWS Batch job definitions
(:mod:`.batch`). Nothing here runs inside a job."""
