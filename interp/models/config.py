"""A model directory's config.json, read the same way by every loader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from interp.errors import InterpError
from interp.validate import config_fields, json_file


def read_config(directory: Path) -> dict[str, Any]:
    """The JSON object in `directory`/config.json; a missing or malformed file is one line."""
    config_file = Path(directory) / "config.json"
    if not config_file.is_file():
        raise InterpError(f"{directory} has no config.json: not a model directory")
    config = json_file(config_file)
    if not isinstance(config, dict):
        raise InterpError(f"{config_file} is not a JSON object")
    return config_fields(config, config_file)
