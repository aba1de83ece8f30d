"""Fixtures for the inference server's unit tests: artifacts (built once) and running servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from server_factories import (
    Artifact,
    RunningServer,
    StartServer,
    diabetes_ridge,
    iris_logistic,
    mixed_logistic,
    settings_for,
)


@pytest.fixture(scope="session")
def iris(tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    return iris_logistic(tmp_path_factory.mktemp("iris"))


@pytest.fixture(scope="session")
def iris_ct(tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    return iris_logistic(tmp_path_factory.mktemp("iris-ct"), column_transformer=True)


@pytest.fixture(scope="session")
def diabetes(tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    return diabetes_ridge(tmp_path_factory.mktemp("diabetes"))


@pytest.fixture(scope="session")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    return mixed_logistic(tmp_path_factory.mktemp("mixed"))


@pytest.fixture
def start_server() -> Iterator[StartServer]:
    """start_server(artifact, **settings) -> a ready RunningServer, stopped after the test."""
    running: list[RunningServer] = []

    def start(art: Artifact, wait_ready: bool = True, **overrides: Any) -> RunningServer:
        server = RunningServer(settings_for(art, **overrides))
        running.append(server)
        return server.start(wait_ready=wait_ready)

    yield start
    for server in running:
        server.stop()


@pytest.fixture
def iris_server(start_server: StartServer, iris: Artifact) -> RunningServer:
    return start_server(iris)


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path / "predictions"
