"""Bringing work over from hosted fine-tuning: `tunesmith import-job` (openai_job.py)."""
