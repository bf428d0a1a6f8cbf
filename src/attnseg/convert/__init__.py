"""Checkpoint converters: one module per foreign format family, each a declarative key map."""
