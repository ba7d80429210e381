"""The contract tables in README.md and docs/design.md, and the ensemble's config, say what contract.py says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from support import CHECKED_IN_REPOSITORY, ROOT
from tritonclient.grpc import model_config_pb2 as mc

from iqaguard import contract
from iqaguard.repository.check import load_config
from iqaguard.repository.layout import CONFIG_FILE

DOCS = (ROOT / "README.md", ROOT / "docs" / "design.md")
_ROW = re.compile(r"^\| (?P<direction>in|out) `(?P<name>\w+)` \| (?P<datatype>\w+) \| \[(?P<dims>[-\d, ]+)\] \|")


def table_rows(path: Path) -> list[contract.TensorSpec]:
    """The contract table's rows in a Markdown file ("| in `IMAGE` | BYTES | [1] | meaning |")."""
    rows = []
    for line in path.read_text().splitlines():
        match = _ROW.match(line)
        if match:
            dims = tuple(int(d) for d in match["dims"].split(","))
            rows.append(contract.TensorSpec(match["direction"], match["name"], match["datatype"], dims))
    return rows


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: path.name)
def test_contract_table_equals_contract_py(doc: Path) -> None:
    assert table_rows(doc) == list(contract.ENSEMBLE_TENSORS)
    text = doc.read_text()
    assert f"`{contract.ENSEMBLE}`" in text and all(f"`{verdict}`" in text for verdict in contract.VERDICTS)


def test_checked_in_ensemble_declares_contract_py() -> None:
    config = load_config(CHECKED_IN_REPOSITORY / contract.ENSEMBLE / CONFIG_FILE)
    declared = [("in", t.name, mc.DataType.Name(t.data_type), tuple(t.dims)) for t in config.input]
    declared += [("out", t.name, mc.DataType.Name(t.data_type), tuple(t.dims)) for t in config.output]
    assert declared == [(t.direction, t.name, t.config_type, t.dims) for t in contract.ENSEMBLE_TENSORS]
    assert tuple(t.name for t in contract.ENSEMBLE_TENSORS if t.direction == "out") == contract.ENSEMBLE_OUTPUTS
