"""The prediction log: JSON lines the trainer reads back to retrain on labelled traffic.

    DIR/predictions-<hostname>.jsonl  {"id","time","model","version","rows":[{feature: value}],"predictions":[...]}
    DIR/feedback-<hostname>.jsonl     {"id","time","version","features":{feature: value},"prediction":p,"label":y}
    DIR/labels-<hostname>.jsonl       {"id","time","labels":[...]}  labels for a request another replica
                                      served; the trainer joins them with that replica's prediction lines
    DIR/shadow-<hostname>.jsonl       {"id","time","version","predictions":[...]}  the challenger's answer
                                      to a request this pod mirrored in shadow mode (issue #22), under the
                                      champion's id; the trainer does not read it

Lines are buffered in memory and appended by `flush()`, which the server calls at least every
second and on shutdown; one file per pod (hostname) so replicas never interleave writes.
Prediction lines are sampled at `sample_rate`; feedback lines are never sampled.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from mlops_contract.timeutil import format_log_time
from mlops_server.codec import Array


class PredictionLog:
    def __init__(
        self,
        directory: str | os.PathLike[str],
        model: str,
        version: str,
        features: Sequence[str],
        *,
        sample_rate: float = 1.0,
        hostname: str | None = None,
        integer_features: Sequence[int] = (),
    ) -> None:
        host = hostname or socket.gethostname()
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.predictions_path = self.directory / f"predictions-{host}.jsonl"
        self.feedback_path = self.directory / f"feedback-{host}.jsonl"
        self.labels_path = self.directory / f"labels-{host}.jsonl"
        self.shadow_path = self.directory / f"shadow-{host}.jsonl"
        self.model = model
        self.version = version
        self.features = list(features)
        self.sample_rate = sample_rate
        # Numeric frames hold integer features as float64; log them as the integers they are.
        self._integer_features = list(integer_features)
        self._random = random.Random()  # noqa: S311 - sampling, not security
        self._predictions: list[bytes] = []
        self._feedback: list[bytes] = []
        self._labels: list[bytes] = []
        self._shadow: list[bytes] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()

    def sampled(self) -> bool:
        return self.sample_rate >= 1.0 or self._random.random() < self.sample_rate

    def _rows(self, frame: Array) -> list[list[Any]]:
        rows: list[list[Any]] = frame.tolist()
        for j in self._integer_features:
            for row in rows:
                value = row[j]
                if isinstance(value, float) and value.is_integer():
                    row[j] = int(value)
        return rows

    def predictions(self, request_id: str, frame: Array, labels: Array) -> None:
        names = self.features
        line = {
            "id": request_id,
            "time": format_log_time(time.time()),
            "model": self.model,
            "version": self.version,
            "rows": [dict(zip(names, row, strict=True)) for row in self._rows(frame)],
            "predictions": labels.tolist(),
        }
        encoded = orjson.dumps(line) + b"\n"
        with self._lock:
            self._predictions.append(encoded)

    def feedback(self, request_id: str, frame: Array, labels: Array, truth: Sequence[Any]) -> None:
        names = self.features
        now = format_log_time(time.time())
        encoded: list[bytes] = []
        for row, predicted, label in zip(self._rows(frame), labels.tolist(), truth, strict=True):
            line = {
                "id": request_id,
                "time": now,
                "version": self.version,
                "features": dict(zip(names, row, strict=True)),
                "prediction": predicted,
                "label": label,
            }
            encoded.append(orjson.dumps(line) + b"\n")
        with self._lock:
            self._feedback.extend(encoded)

    def relayed(self, request_id: str, truth: Sequence[Any]) -> None:
        """Labels for a request this pod did not serve (another replica did, or it expired here)."""
        line = {"id": request_id, "time": format_log_time(time.time()), "labels": list(truth)}
        with self._lock:
            self._labels.append(orjson.dumps(line) + b"\n")

    def shadow(self, request_id: str, version: str, labels: Sequence[Any]) -> None:
        """The challenger's predictions for a request this pod answered and mirrored."""
        line = {
            "id": request_id,
            "time": format_log_time(time.time()),
            "version": version,
            "predictions": list(labels),
        }
        with self._lock:
            self._shadow.append(orjson.dumps(line) + b"\n")

    def flush(self) -> None:
        """Append buffered lines to the files (safe to call from any thread)."""
        with self._flush_lock:  # one writer at a time, so lines keep their order
            with self._lock:  # swap the buffers; appends never wait for the disk
                predictions, self._predictions = self._predictions, []
                feedback, self._feedback = self._feedback, []
                relayed, self._labels = self._labels, []
                shadow, self._shadow = self._shadow, []
            for path, lines in (
                (self.predictions_path, predictions),
                (self.feedback_path, feedback),
                (self.labels_path, relayed),
                (self.shadow_path, shadow),
            ):
                if lines:
                    with open(path, "ab") as f:
                        f.write(b"".join(lines))
