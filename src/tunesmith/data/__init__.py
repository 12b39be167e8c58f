"""Prepare data: read, validate, split. Data enters the pipeline here."""
