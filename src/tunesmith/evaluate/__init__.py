"""Evaluation: batched greedy generation, scorers, reports."""
