"""One string names a data source: ``load_data`` dispatches it to the embedded task, GLUE or local files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import DataError
from .bundle import DataBundle
from .embedded import load_embedded_sentiment
from .glue import GLUE_TASKS, glue_key, load_glue
from .images import is_image_source, load_images
from .tables import load_local

EMBEDDED_SOURCES = ("embedded", "movie-sentiment")
# load_local's options and their defaults: callers (recipes, CLI) pass them whatever the source is.
_LOCAL_DEFAULTS: dict[str, Any] = {"dev": None, "test": None, "text_column": "text", "text_pair_column": None,
                                   "label_column": "label", "task_type": "auto", "dev_fraction": 0.1}


def _only(kwargs: dict[str, Any], allowed: tuple[str, ...], what: str) -> dict[str, Any]:
    """Keep ``allowed`` options; drop local-file options left at their defaults; reject the rest.

    Generic callers pass the local-file options for every source, so defaults must not be an error, but a real
    setting (say ``text_column='review'`` for GLUE) would be silently ignored, so that is one.
    """
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in allowed:
            out[key] = value
        elif key in _LOCAL_DEFAULTS and value == _LOCAL_DEFAULTS[key]:
            continue
        else:
            raise DataError(f"option {key}={value!r} does not apply to {what}.",
                            f"drop it (valid options here: {', '.join(allowed) or 'none'}).")
    return out


def load_data(source: str, **kwargs: Any) -> DataBundle:
    """Load data from a one-string description, as used by recipes and the CLI.

    * ``"embedded"`` / ``"movie-sentiment"`` -> :func:`load_embedded_sentiment` (options: seed, cache_dir);
    * ``"glue:<task>:<glue_dir>"``, ``"glue:<task>"`` with ``glue_dir=``, a task name with ``glue_dir=``, or a GLUE
      directory with ``glue_task=`` -> :func:`load_glue` (``seed`` is ignored: GLUE splits are fixed);
    * anything else is a local train file for :func:`load_local`, which gets the remaining options.
    """
    src = str(source).strip()
    kwargs = dict(kwargs)
    glue_task = kwargs.pop("glue_task", None)
    glue_dir = kwargs.pop("glue_dir", None)
    if src.lower() in EMBEDDED_SOURCES:
        if glue_task or glue_dir:
            raise DataError(f"data source '{src}' is the embedded task, but a GLUE task/directory was also given.",
                            "use 'glue:<task>:<glue_dir>' for GLUE, or drop glue_task/glue_dir.")
        return load_embedded_sentiment(**_only(kwargs, ("seed", "cache_dir"), "the embedded data"))
    if src.lower().startswith("glue:") or src.lower() == "glue" or glue_task or glue_dir:
        if src.lower().startswith("glue:"):
            parts = src.split(":", 2)
            task = parts[1] or glue_task
            glue_dir = (parts[2] if len(parts) == 3 and parts[2] else None) or glue_dir
        elif glue_task:
            task = glue_task
            glue_dir = glue_dir or (None if src.lower() == "glue" else src)
        else:
            task = None if src.lower() == "glue" else src
        if not task:
            raise DataError(f"data source '{src}' does not name a GLUE task.",
                            f"write it as 'glue:<task>:<glue_dir>' (tasks: {', '.join(GLUE_TASKS)}).")
        if not glue_dir:
            raise DataError(f"data source '{src}' does not say where the GLUE data is.",
                            f"write it as 'glue:{task}:<glue_dir>' or pass glue_dir=.")
        _only({k: v for k, v in kwargs.items() if k != "seed"}, (), "GLUE data")
        return load_glue(glue_dir, task)
    if is_image_source(src):  # a folder of class folders, a CSV of path,label, or the textile task
        return load_images(src, seed=int(kwargs.get("seed") or 0))
    path = Path(src).expanduser()
    if not path.exists() and glue_key(src) in GLUE_TASKS:
        raise DataError(f"data source '{src}' looks like a GLUE task but no GLUE directory was given.",
                        f"use 'glue:{src}:<glue_dir>'.")
    if not path.exists():
        raise DataError(f"data source '{src}' is not an existing file, 'embedded' or 'glue:<task>:<dir>'.",
                        "check the path, or use one of those forms.")
    return load_local(src, **_only(kwargs, tuple(_LOCAL_DEFAULTS) + ("seed",), "local files"))
