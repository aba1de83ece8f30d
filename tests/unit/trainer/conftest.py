"""Fixtures for the trainer's unit tests: a scratch PVC root and seeded data."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from trainer_factories import Trainer, mixed_frame


@pytest.fixture
def trainer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Trainer:
    return Trainer(tmp_path, capsys)


@pytest.fixture
def mixed() -> pd.DataFrame:
    return mixed_frame()
