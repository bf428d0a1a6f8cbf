"""YAML as attnseg reads it from users (configs, `--set`, `--model-option`, vocabularies, label sets): PyYAML's
safe loader with a bound on nesting depth, so `[[[[...` thousands deep is one error, not a RecursionError."""
from __future__ import annotations

import yaml

MAX_DEPTH = 100  # a config nests four or five levels; anything near this is not a config


class YamlTooDeep(yaml.YAMLError):
    """The document nests collections deeper than MAX_DEPTH."""


class _BoundedLoader(yaml.SafeLoader):
    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):  # PyYAML composes nested collections recursively: count the levels
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise YamlTooDeep(f"YAML nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def safe_load(text: str | bytes):
    """yaml.safe_load with nesting bounded by MAX_DEPTH (YamlTooDeep, a yaml.YAMLError, past it)."""
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
