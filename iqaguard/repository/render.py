"""A set's generated models, rendered from the checked-in ones (see iqaguard.repository.sets).

Only the `name:` line and the ensemble steps' `model_name`s change; every other byte of the checked-in
config.pbtxt (batching, limits, comments) is kept, and the preprocessor's Python-backend model.py is
copied as is (the preprocessor's, the monitor's). So a suffixed set behaves exactly as the default set does.
"""

from __future__ import annotations

import re
from pathlib import Path

from iqaguard.repository.sets import CONFIG_FILE, ModelSet

PYTHON_MODEL = "1/model.py"  # a Python-backend model's glue, beside its config
ENSEMBLE_VERSION = "1"  # an ensemble needs one (empty) version directory
_NAME_LINE = re.compile(r'^name:\s*"[^"]*"', re.MULTILINE)
_STEP_MODEL = re.compile(r'(model_name:\s*")([^"]*)(")')


def render_config(text: str, name: str, model_set: ModelSet) -> str:
    """A checked-in config.pbtxt's text for model `name` of `model_set` (steps call the set's members)."""
    renamed, count = _NAME_LINE.subn(f'name: "{name}"', text)
    if count != 1:
        raise ValueError(f"expected exactly one top-level name: line in the checked-in config, found {count}")
    return _STEP_MODEL.sub(lambda m: f"{m.group(1)}{model_set.model(m.group(2))}{m.group(3)}", renamed)


def generated_files(repository: Path, model: str, model_set: ModelSet) -> dict[str, bytes]:
    """{path inside the model directory: content} for generated model `model` of `model_set`.

    Raises FileNotFoundError when the checked-in model it copies is missing.
    """
    base = model_set.generated[model]
    source = Path(repository) / base
    config = source / CONFIG_FILE
    if not config.is_file():
        raise FileNotFoundError(f"{config} is missing: {repository} is not the project's model repository")
    files = {CONFIG_FILE: render_config(config.read_text(), model, model_set).encode()}
    if (source / PYTHON_MODEL).is_file():
        files[PYTHON_MODEL] = (source / PYTHON_MODEL).read_bytes()
    return files
