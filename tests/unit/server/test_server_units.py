"""Pure pieces without HTTP: settings, the batcher's merging and isolation, the feedback store."""

from __future__ import annotations

import asyncio
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from mlops_server.batching import Batcher
from mlops_server.codec import Prediction, RequestError, parse_v2
from mlops_server.config import Settings, parse_settings
from mlops_server.monitoring import FeedbackError, FeedbackStore, Window, retained_bytes
from mlops_server.signature import Kind, Signature, SignatureError, kind_of

# --- settings ----------------------------------------------------------------------------------


def test_settings_from_flags_env_and_defaults() -> None:
    env = {
        "MLOPS_PORT": "9000",
        "MLOPS_MAX_BATCH_SIZE": "8",
        "MLOPS_ARTIFACT": "/env",
        "MLOPS_ACCESS_LOG": "true",
    }
    settings = parse_settings(["--max-batch-size", "16"], env)
    assert settings == Settings(artifact="/env", port=9000, max_batch_size=16, access_log=True)
    assert settings.max_body_bytes == 8 * 1024 * 1024
    assert settings.max_batch_delay_ms == 0.0
    assert settings.drift_window == 1000
    assert settings.feedback_capacity == 10000
    assert settings.feedback_max_bytes == 16 * 1024 * 1024
    assert settings.host == "0.0.0.0"


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["--artifact", "a", "--port", "http"], {}),
        (["--artifact", "a"], {"MLOPS_PORT": "70000"}),
        (["--artifact", "a"], {"MLOPS_LOG_SAMPLE_RATE": "1.5"}),
        (["--artifact", "a", "--sha256", "abc"], {}),
        (["--artifact", "a", "--max-batch-size", "0"], {}),
        (["--artifact", "a"], {"MLOPS_LOG_LEVEL": "loud"}),
        ([], {}),
    ],
    ids=[
        "port not a number",
        "env port out of range",
        "rate above 1",
        "short sha256",
        "zero batch",
        "bad level",
        "no artifact",
    ],
)
def test_invalid_settings_exit_2(
    argv: list[str], env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_settings(argv, env)
    assert exc.value.code == 2
    assert "mlops-server: error:" in capsys.readouterr().err


# --- signature ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "kind"),
    [
        ("float64", Kind.FLOAT),
        ("float32", Kind.FLOAT),
        ("int64", Kind.INT),
        ("uint8", Kind.INT),
        ("bool", Kind.BOOL),
        ("object", Kind.CATEGORY),
        ("str", Kind.CATEGORY),
        ("category", Kind.CATEGORY),
    ],
)
def test_kind_of(dtype: str, kind: Kind) -> None:
    assert kind_of(dtype) is kind


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ({}, "no signature"),
        ({"signature": {"task": "ranking", "features": [{"name": "a"}]}}, "task must be"),
        ({"signature": {"task": "regression", "features": []}}, "no features"),
        ({"signature": {"task": "regression", "features": [{"dtype": "float64"}]}}, "feature 0 has no name"),
        ({"signature": {"task": "regression", "features": [{"name": "a"}, {"name": "a"}]}}, "duplicate"),
    ],
)
def test_bad_signature(meta: dict[str, Any], message: str) -> None:
    with pytest.raises(SignatureError, match=message):
        Signature.from_metadata(meta)


def _sig(*features: tuple[str, str]) -> Signature:
    return Signature.from_metadata(
        {"signature": {"task": "classification", "features": [{"name": n, "dtype": d} for n, d in features]}}
    )


def test_integer_features_must_be_integral() -> None:
    sig = _sig(("a", "float64"), ("b", "int64"))
    body = b'{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP64","data":[1.5, 2.5]}]}'
    with pytest.raises(RequestError, match=r"feature 'b' \(int64\): expected integers, got 2.5"):
        parse_v2(body, sig, ("predict",))
    ok = parse_v2(body.replace(b"2.5", b"2.0"), sig, ("predict",))
    assert ok.frame.tolist() == [[1.5, 2.0]]


def test_mixed_frame_holds_python_values() -> None:
    sig = _sig(("w", "float64"), ("c", "object"), ("flag", "bool"))
    body = (
        b'{"inputs":[{"name":"c","shape":[2],"datatype":"BYTES","data":["a","b"]},'
        b'{"name":"w","shape":[2,1],"datatype":"INT64","data":[[1],[2]]},'
        b'{"name":"flag","shape":[2],"datatype":"BOOL","data":[true,false]}]}'
    )
    frame = parse_v2(body, sig, ("predict",)).frame
    assert frame.dtype == object
    assert frame.tolist() == [[1.0, "a", True], [2.0, "b", False]]
    with pytest.raises(RequestError, match=r"feature 'flag' \(bool\): expected booleans, got 'yes'"):
        parse_v2(
            body.replace(b"[true,false]", b'["yes","no"]').replace(b'"BOOL"', b'"BYTES"'), sig, ("predict",)
        )


def test_binary_tensor_size_must_match_the_shape() -> None:
    sig = _sig(("a", "float64"), ("b", "float64"))
    header = b'{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","parameters":{"binary_data_size":4}}]}'
    with pytest.raises(RequestError, match="binary data has 4 bytes; shape and FP32 need 8"):
        parse_v2(header + b"\0" * 4, sig, ("predict",), json_length=len(header))
    with pytest.raises(RequestError, match="exceeds the binary data sent"):
        parse_v2(header, sig, ("predict",), json_length=len(header))
    with pytest.raises(RequestError, match="does not fit"):
        parse_v2(header, sig, ("predict",), json_length=len(header) + 1)


# --- batching ----------------------------------------------------------------------------------


class _Model:
    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict(self, frame: np.ndarray, want_proba: bool) -> Prediction:
        if np.isnan(frame).any():
            raise ValueError("Input X contains NaN")
        self.calls.append(len(frame))
        return Prediction(labels=frame[:, 0] * 10, proba=None)


async def test_requests_arriving_together_share_a_call_and_a_bad_one_fails_alone() -> None:
    model = _Model()
    outcomes: dict[int, Any] = {}
    done = asyncio.Event()
    with ThreadPoolExecutor(1) as executor:
        batcher = Batcher(asyncio.get_running_loop(), model.predict, executor, max_rows=64)
        frames = [np.array([[1.0]]), np.array([[2.0], [3.0]]), np.array([[math.nan]]), np.array([[4.0]])]
        for i, frame in enumerate(frames):

            def callback(outcome: Any, i: int = i) -> None:
                outcomes[i] = outcome
                if len(outcomes) == len(frames):
                    done.set()

            batcher.submit(frame, False, callback)  # all in one loop iteration
        await asyncio.wait_for(done.wait(), 10)
    assert batcher.batches == 1
    # The merged call failed on the NaN row; each request was retried alone.
    assert model.calls == [1, 2, 1]
    assert outcomes[0].labels.tolist() == [10.0]
    assert outcomes[1].labels.tolist() == [20.0, 30.0]
    assert isinstance(outcomes[2], ValueError)
    assert outcomes[3].labels.tolist() == [40.0]


async def test_batches_are_bounded_by_max_rows() -> None:
    model = _Model()
    done = asyncio.Event()
    count = 0

    def callback(outcome: Any) -> None:
        nonlocal count
        count += 1
        if count == 5:
            done.set()

    with ThreadPoolExecutor(1) as executor:
        batcher = Batcher(asyncio.get_running_loop(), model.predict, executor, max_rows=4)
        for rows in (2, 2, 3, 5, 1):  # 5 > max_rows: runs alone, never split
            batcher.submit(np.ones((rows, 1)), False, callback)
        await asyncio.wait_for(done.wait(), 10)
    assert model.calls == [4, 3, 5, 1]


async def test_fixed_delay_waits_for_a_full_batch() -> None:
    model = _Model()
    done = asyncio.Event()
    with ThreadPoolExecutor(1) as executor:
        batcher = Batcher(asyncio.get_running_loop(), model.predict, executor, max_rows=3, max_delay=60.0)
        batcher.submit(np.ones((1, 1)), False, lambda o: None)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert batcher.batches == 0  # waiting for more rows (up to 60 s)
        batcher.submit(np.ones((2, 1)), False, lambda o: done.set())  # reaches max_rows: runs now
        await asyncio.wait_for(done.wait(), 10)
    assert model.calls == [3]


# --- monitoring pieces -------------------------------------------------------------------------


def test_window_keeps_the_last_rows() -> None:
    window = Window(capacity=4, width=1, dtype=float)
    window.add(np.array([[1.0], [2.0], [3.0]]))
    window.add(np.array([[4.0], [5.0]]))
    assert sorted(window.snapshot()[:, 0].tolist()) == [2.0, 3.0, 4.0, 5.0]
    window.add(np.arange(10.0).reshape(-1, 1))
    assert sorted(window.snapshot()[:, 0].tolist()) == [6.0, 7.0, 8.0, 9.0]
    assert window.rows == 4


@pytest.mark.parametrize(
    ("case", "sizes", "kept"),
    [
        ("under both bounds", [1, 1, 1], ["r0", "r1", "r2"]),
        ("request count bound", [1, 1, 1, 1, 1], ["r2", "r3", "r4"]),
        ("byte bound: a large request evicts the oldest", [1, 1, 119], ["r1", "r2"]),
        ("byte bound: a larger one evicts both", [1, 1, 120], ["r2"]),
        ("byte bound: a request over the budget is not kept", [1, 1, 200], []),
    ],
)
def test_feedback_store_is_bounded_by_requests_and_bytes(
    case: str, sizes: list[int], kept: list[str]
) -> None:
    # 4 float64 features and one int64 label: 40 bytes a row; the budget is 120 rows.
    store = FeedbackStore(capacity=3, window=100, classification=True, max_bytes=120 * 40)
    for i, rows in enumerate(sizes):
        store.remember(f"r{i}", np.zeros((rows, 4)), np.zeros(rows, dtype=np.int64))
    requests, size = store.remembered
    assert requests == len(kept), case
    assert size == sum(40 * sizes[int(k[1:])] for k in kept), case
    for i in range(len(sizes)):
        if f"r{i}" in kept:
            store.label(f"r{i}", [0] * sizes[i])
        else:
            with pytest.raises(FeedbackError) as exc:
                store.label(f"r{i}", [0] * sizes[i])
            assert exc.value.status == 404


def test_feedback_store_counts_the_buffer_a_view_keeps_alive() -> None:
    batch = np.zeros((1000, 4))
    assert retained_bytes(batch[:1]) == batch.nbytes
    assert retained_bytes(np.frombuffer(bytes(800), dtype=np.float64)[:2]) == 800
    assert retained_bytes(np.zeros(3)) == 24


def test_feedback_store_accuracy_by_category_key() -> None:
    store = FeedbackStore(capacity=10, window=100, classification=True)
    store.remember("a", np.zeros((3, 1)), np.array([1, 2, 0]))
    store.label("a", ["1", 2.0, 1])
    assert store.samples == 3
    assert store.quality == pytest.approx(2 / 3)
    with pytest.raises(FeedbackError) as exc:
        store.label("a", [1, 2, 0])
    assert exc.value.status == 409
