"""Recipes and zoo entries: registry.yaml, ``extends:``, overrides, validation."""
