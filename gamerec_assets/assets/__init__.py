"""The Dagster layer: one module per pipeline stage, each holding its assets and checks."""
