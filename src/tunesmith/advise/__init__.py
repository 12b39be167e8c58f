"""Decide before you spend: recommendations and memory/time/cost estimates."""
