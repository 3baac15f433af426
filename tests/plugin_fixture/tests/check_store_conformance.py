"""The plugin's store against statesaga's Store conformance suite.

(Named check_*.py so statesaga's own test run does not collect it before the plugin is
installed; a plugin's repository would call it test_store_conformance.py.)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from statesaga.plugins import open_store
from statesaga.testing import StoreConformance
from statesaga.testing.store_suite import SECRET
from statesaga_jsonfile import JsonFileStore


class TestJsonFileStore(StoreConformance):
    concurrency_threads = 4
    concurrency_rounds = 10

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[JsonFileStore]:
        # Opened by URL, as the engine does, which also checks the entry point is installed.
        store = open_store(f"jsonfile://{tmp_path}/docs")
        assert isinstance(store, JsonFileStore)
        store.initialize()
        yield store
        store.close()

    def write_raw(self, store: JsonFileStore, workflow_id: str, text: str) -> None:
        (store.directory / f"{workflow_id}.json").write_text(text, encoding="utf-8")

    def damage(self, store: JsonFileStore, workflow_id: str, kind: str) -> None:
        path = store.directory / f"{workflow_id}.json"
        if kind == "bytes":
            doc = path.read_bytes()
            path.write_bytes(doc.replace(b'"name":"', b'"name":"\xff' + SECRET.encode(), 1))
        elif kind == "revision":
            doc = json.loads(path.read_text(encoding="utf-8"))
            path.write_text(json.dumps({**doc, "revision": "7x"}), encoding="utf-8")
        else:
            super().damage(store, workflow_id, kind)
