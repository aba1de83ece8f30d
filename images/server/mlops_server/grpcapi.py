"""The Open Inference Protocol (V2) over gRPC: `inference.GRPCInferenceService` on grpc.aio (issue #20).

RPCs: ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelInfer, and
Triton's ModelConfig, ModelStatistics and RepositoryIndex for the one served model. The
messages come from `mlops_server/proto/inference.proto` (generated module committed, see
`make protos`); the service is registered here with a generic handler, so no generated
`_pb2_grpc` module is needed and every handler is typed.

Everything is shared with the HTTP routes through `mlops_server.app.App`: the model, the
micro-batcher, the request statistics, metrics (`mlops_requests_total{protocol="grpc"}`, whose
`code` is the HTTP status the same outcome gets over REST, so the error-rate alert and the
operator's scraper count both protocols alike), the drift monitor, feedback memory (an id
answered over gRPC takes labels at the HTTP /feedback route) and the prediction log.

ModelInfer takes each input's data from `raw_input_contents` (little-endian bytes, the way
tritonclient sends it) or from the typed `contents`; the answer uses the same form
(`raw_output_contents` when the request was raw). Decoding uses the HTTP path's checks
(`mlops_server.codec`), so both protocols accept and refuse the same tensors.

Limits: the largest message is the HTTP body limit (`--max-body-bytes`, RESOURCE_EXHAUSTED from
gRPC itself above it), the row budget (`--max-rows`, checked from the declared shape before any
data is decoded), `--grpc-max-streams` concurrent calls per connection, `--max-connections`
connections and calls in progress server-wide, the header limit for metadata, the idle timeout
for connections; a client's deadline bounds the wait for the model (DEADLINE_EXCEEDED).

Errors -> status codes: 400 INVALID_ARGUMENT, 404 NOT_FOUND, 413 RESOURCE_EXHAUSTED,
503 UNAVAILABLE (before the model is loaded and while draining), 500 INTERNAL.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar

import grpc
import numpy as np
from google.protobuf.message import Message

from mlops_server import __version__, codec, logs
from mlops_server.app import EXTENSIONS, SERVER_NAME, App
from mlops_server.codec import OUTPUT_PREDICT, OUTPUT_PROBA, Array, Prediction, RequestError, Tensor
from mlops_server.proto import inference_pb2 as pb
from mlops_server.shadow import Copy

if TYPE_CHECKING:
    from mlops_server.batching import Outcome
    from mlops_server.model import ServedModel

log = logs.get("grpc")

SERVICE: Final = "inference.GRPCInferenceService"
PROTOCOL: Final = "grpc"

STATUS_CODES: Final[Mapping[int, grpc.StatusCode]] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}

# The `contents` field of each datatype, and the dtype its values are read as.
_CONTENTS: Final[Mapping[str, tuple[str, str]]] = {
    "BOOL": ("bool_contents", "bool"),
    "INT8": ("int_contents", "int64"),
    "INT16": ("int_contents", "int64"),
    "INT32": ("int_contents", "int64"),
    "INT64": ("int64_contents", "int64"),
    "UINT8": ("uint_contents", "uint64"),
    "UINT16": ("uint_contents", "uint64"),
    "UINT32": ("uint_contents", "uint64"),
    "UINT64": ("uint64_contents", "uint64"),
    "FP16": ("fp32_contents", "float64"),
    "FP32": ("fp32_contents", "float64"),
    "FP64": ("fp64_contents", "float64"),
    "BYTES": ("bytes_contents", "object"),
}
# Outputs' little-endian wire dtypes (labels are INT64, FP64, BOOL or BYTES; probabilities FP64).
_RAW_DTYPE: Final[Mapping[str, str]] = {"INT64": "<i8", "FP64": "<f8", "BOOL": "|b1"}

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)


class _Abort(Exception):
    """Answer the call with this status (after accounting for it)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class GrpcServer:
    """The gRPC endpoint of one `App`; `start()` binds, `stop()` drains with a grace period."""

    def __init__(
        self,
        app: App,
        *,
        max_message_bytes: int,
        max_metadata_bytes: int,
        max_streams: int,
        max_connections: int,
        idle_timeout: float,
    ) -> None:
        self.app = app
        self.options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_metadata_size", max_metadata_bytes),
            ("grpc.max_concurrent_streams", max_streams),
            ("grpc.max_allowed_incoming_connections", max_connections),
            ("grpc.max_connection_idle_ms", int(idle_timeout * 1000)),
            # Never share the port with another process (grpc's default allows it).
            ("grpc.so_reuseport", 0),
        ]
        self.max_calls = max_connections
        self._server: grpc.aio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port; returns the bound port. Raises OSError when it cannot bind."""
        server = grpc.aio.server(options=self.options, maximum_concurrent_rpcs=self.max_calls)
        server.add_generic_rpc_handlers((self._handlers(),))
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            bound = server.add_insecure_port(address)
        except RuntimeError as e:  # grpcio raises RuntimeError when the port cannot be bound
            raise OSError(f"cannot listen on {address}: {e}") from None
        if not bound:
            raise OSError(f"cannot listen on {address}")
        await server.start()
        self._server = server
        return bound

    async def stop(self, grace: float) -> None:
        """Refuse new calls, let calls in progress finish for up to `grace` seconds, then cancel them."""
        if self._server is not None:
            await self._server.stop(grace)

    def _handlers(self) -> grpc.GenericRpcHandler:
        def unary(
            fn: Callable[[Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]],
            request: type[Req],
        ) -> grpc.RpcMethodHandler[Req, Resp]:
            return grpc.unary_unary_rpc_method_handler(
                fn,
                request_deserializer=request.FromString,
                response_serializer=lambda m: m.SerializeToString(),
            )

        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "ServerLive": unary(self.server_live, pb.ServerLiveRequest),
                "ServerReady": unary(self.server_ready, pb.ServerReadyRequest),
                "ModelReady": unary(self.model_ready, pb.ModelReadyRequest),
                "ServerMetadata": unary(self.server_metadata, pb.ServerMetadataRequest),
                "ModelMetadata": unary(self.model_metadata, pb.ModelMetadataRequest),
                "ModelInfer": unary(self.model_infer, pb.ModelInferRequest),
                "ModelConfig": unary(self.model_config, pb.ModelConfigRequest),
                "ModelStatistics": unary(self.model_statistics, pb.ModelStatisticsRequest),
                "RepositoryIndex": unary(self.repository_index, pb.RepositoryIndexRequest),
            },
        )

    # --- health and metadata ---------------------------------------------------------------

    async def server_live(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.app.ready)

    async def model_ready(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        app = self.app
        if app.model_name is not None and request.name != app.model_name:
            await _abort(
                context, 404, f"model '{request.name}' not found; this server serves '{app.model_name}'"
            )
        model = app.model
        if model is not None and request.version and request.version != model.version:
            await _abort(context, 404, f"model '{request.name}' has no version '{request.version}'")
        return pb.ModelReadyResponse(ready=app.ready)

    async def server_metadata(
        self, request: pb.ServerMetadataRequest, context: Any
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=__version__, extensions=EXTENSIONS)

    async def model_metadata(
        self, request: pb.ModelMetadataRequest, context: Any
    ) -> pb.ModelMetadataResponse:
        model = await self._serving(context, request.name, request.version)
        meta = model.metadata_v2()

        def tensors(items: list[dict[str, Any]]) -> list[pb.ModelMetadataResponse.TensorMetadata]:
            return [
                pb.ModelMetadataResponse.TensorMetadata(
                    name=t["name"], datatype=t["datatype"], shape=t["shape"]
                )
                for t in items
            ]

        return pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=tensors(meta["inputs"]),
            outputs=tensors(meta["outputs"]),
        )

    async def model_config(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        model = await self._serving(context, request.name, request.version)
        doc = self.app.model_config(model)
        return pb.ModelConfigResponse(
            config=pb.ModelConfig(
                name=doc["name"],
                platform=doc["platform"],
                backend=doc["backend"],
                max_batch_size=doc["max_batch_size"],
                input=[
                    pb.ModelInput(name=t["name"], data_type=t["data_type"], dims=t["dims"])
                    for t in doc["input"]
                ],
                output=[
                    pb.ModelOutput(name=t["name"], data_type=t["data_type"], dims=t["dims"])
                    for t in doc["output"]
                ],
                parameters={
                    k: pb.ModelParameter(string_value=v["string_value"]) for k, v in doc["parameters"].items()
                },
            )
        )

    async def model_statistics(
        self, request: pb.ModelStatisticsRequest, context: Any
    ) -> pb.ModelStatisticsResponse:
        if request.name:
            await self._serving(context, request.name, request.version)
        model = self.app.model
        if model is None:
            return pb.ModelStatisticsResponse()
        doc = self.app.stats.document(model.name, model.version)
        durations = {
            k: pb.StatisticDuration(count=v["count"], ns=v["ns"]) for k, v in doc["inference_stats"].items()
        }
        return pb.ModelStatisticsResponse(
            model_stats=[
                pb.ModelStatistics(
                    name=doc["name"],
                    version=doc["version"],
                    last_inference=doc["last_inference"],
                    inference_count=doc["inference_count"],
                    execution_count=doc["execution_count"],
                    inference_stats=pb.InferStatistics(**durations),
                )
            ]
        )

    async def repository_index(
        self, request: pb.RepositoryIndexRequest, context: Any
    ) -> pb.RepositoryIndexResponse:
        entries = self.app.repository_index()
        if request.ready:
            entries = [e for e in entries if e["state"] == "READY"]
        return pb.RepositoryIndexResponse(
            models=[pb.RepositoryIndexResponse.ModelIndex(**e) for e in entries]
        )

    async def _serving(self, context: Any, name: str, version: str) -> ServedModel:
        try:
            return self.app.serving(name, version)
        except RequestError as e:
            await _abort(context, e.status, e.message)
            raise  # unreachable: abort raises

    # --- inference -------------------------------------------------------------------------

    async def model_infer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        started = time.perf_counter()
        app = self.app
        try:
            response = await self._infer(request, context, started)
        except asyncio.CancelledError:
            # The client went away or its deadline passed: nobody reads an answer.
            app.record_failure(PROTOCOL, 499, time.perf_counter() - started)
            raise
        except Exception as e:
            if isinstance(e, _Abort):
                status, message = e.status, e.message
            else:
                status, message = app.classify(e, "ModelInfer", f"/{SERVICE}/ModelInfer")
            app.record_failure(PROTOCOL, status, time.perf_counter() - started)
            await _abort(context, status, message)
            raise  # unreachable: abort raises
        return response

    async def _infer(
        self, request: pb.ModelInferRequest, context: Any, started: float
    ) -> pb.ModelInferResponse:
        app = self.app
        if app.closing:
            raise RequestError("shutting down", 503)
        model = app.serving(request.model_name, request.model_version)
        max_rows = app.max_rows
        raw = list(request.raw_input_contents)
        size = sum(len(r) for r in raw) + 8 * sum(math.prod(t.shape) for t in request.inputs if t.shape)

        tensors: list[Tensor] = []

        def decode() -> tuple[Array, tuple[str, ...]]:
            tensors.extend(_tensor(i, t, raw, max_rows) for i, t in enumerate(request.inputs))
            if not tensors:
                raise RequestError("request must have at least one input")
            if raw and len(raw) != len(tensors):
                raise RequestError(
                    f"raw_input_contents has {len(raw)} entries for {len(tensors)} inputs; send one per input"
                )
            frame = codec.frame_from_tensors(tensors, model.signature)
            wanted = [{"name": o.name} for o in request.outputs] or None
            return frame, codec.requested_outputs(wanted, model.outputs)

        if size >= app.offload_bytes:
            frame, outputs = await asyncio.get_running_loop().run_in_executor(app.decoder(), decode)
        else:
            frame, outputs = decode()
        prediction = await self._predict(frame, OUTPUT_PROBA in outputs, context)
        request_id = request.id or codec.new_request_id()
        response = _response(model, request_id, frame, prediction, outputs, raw=bool(raw))
        app.record_success(PROTOCOL, time.perf_counter() - started, request_id, frame, prediction)
        if app.mirror is not None:  # shadow mode: the challenger gets it over HTTP

            def copy() -> Copy:
                body, header = codec.encode_binary_request(tensors, request_id, [OUTPUT_PREDICT])
                return Copy(f"/v2/models/{model.name}/infer", body, request_id, json_length=header)

            app.mirror.offer(copy)
        return response

    async def _predict(self, frame: Array, want_proba: bool, context: Any) -> Prediction:
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise _Abort(504, "the deadline passed before the model ran")
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()

        def done(outcome: Outcome) -> None:
            if not future.done():
                future.set_result(outcome)

        self.app.submit(frame, want_proba, done)
        try:
            outcome = await asyncio.wait_for(future, remaining)
        except TimeoutError:
            raise _Abort(504, f"no prediction within the client's deadline ({remaining:.3f} s)") from None
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


async def _abort(context: Any, status: int, message: str) -> None:
    await context.abort(STATUS_CODES.get(status, grpc.StatusCode.INTERNAL), message)


def _tensor(i: int, t: pb.ModelInferRequest.InferInputTensor, raw: list[bytes], max_rows: int) -> Tensor:
    """One input as the codec's Tensor: shape and row budget first, then its data."""
    name = t.name
    if not name:
        raise RequestError(f"inputs[{i}] has no name")
    where = f"input '{name}'"
    shape = tuple(t.shape)
    if not shape or any(d < 0 for d in shape):
        raise RequestError(
            f"{where}: shape must be non-empty with non-negative dimensions, got {list(shape)}"
        )
    codec.check_rows(shape[0], max_rows, where)
    datatype = t.datatype
    if datatype not in codec.DATATYPES:
        raise RequestError(
            f"{where}: unknown datatype {datatype!r}; expected one of {', '.join(codec.DATATYPES)}"
        )
    count = math.prod(shape)
    if raw:
        if t.HasField("contents"):
            raise RequestError(f"{where}: has contents, but the request sends raw_input_contents")
        if i >= len(raw):
            raise RequestError(f"{where}: raw_input_contents has no entry for it")
        values = codec.decode_raw_tensor(datatype, memoryview(raw[i]), count, where)
    else:
        values = _typed_values(datatype, t.contents, where)
    if values.size != count:
        raise RequestError(f"{where}: shape {list(shape)} needs {count} values, got {values.size}")
    return Tensor(name=name, shape=shape, datatype=datatype, values=values)


def _typed_values(datatype: str, contents: pb.InferTensorContents, where: str) -> Array:
    field, dtype = _CONTENTS[datatype]
    values = getattr(contents, field)
    if dtype == "object":
        try:
            return np.array([v.decode() for v in values], dtype=object)
        except UnicodeDecodeError:
            raise RequestError(f"{where}: a BYTES element is not UTF-8") from None
    arr = np.fromiter(values, dtype=dtype, count=len(values))
    if datatype in codec.INT_RANGE and arr.size:
        low, high = codec.INT_RANGE[datatype]
        if int(arr.min()) < low or int(arr.max()) > high:
            raise RequestError(f"{where} ({datatype}): value out of range [{low}, {high}]")
    return arr


def _response(
    model: ServedModel,
    request_id: str,
    frame: Array,
    prediction: Prediction,
    outputs: tuple[str, ...],
    *,
    raw: bool,
) -> pb.ModelInferResponse:
    n = len(frame)
    response = pb.ModelInferResponse(model_name=model.name, model_version=model.version, id=request_id)
    for name in outputs:
        if name == OUTPUT_PREDICT:
            values, datatype, shape = prediction.labels, model.label_datatype, [n]
        elif name == OUTPUT_PROBA and prediction.proba is not None:
            proba = prediction.proba
            values, datatype, shape = proba.reshape(-1), "FP64", [n, proba.shape[1]]
        else:
            continue
        tensor = response.outputs.add(name=name, datatype=datatype, shape=shape)
        if raw:
            response.raw_output_contents.append(_raw_bytes(values, datatype))
        else:
            _fill_contents(tensor.contents, values, datatype)
    return response


def _raw_bytes(values: Array, datatype: str) -> bytes:
    if datatype == "BYTES":
        parts = []
        for v in values.tolist():
            data = str(v).encode()
            parts.append(len(data).to_bytes(4, "little"))
            parts.append(data)
        return b"".join(parts)
    return np.ascontiguousarray(values, dtype=_RAW_DTYPE[datatype]).tobytes()


def _fill_contents(contents: pb.InferTensorContents, values: Array, datatype: str) -> None:
    if datatype == "BYTES":
        contents.bytes_contents.extend(str(v).encode() for v in values.tolist())
    elif datatype == "INT64":
        contents.int64_contents.extend(values.astype(np.int64).tolist())
    elif datatype == "BOOL":
        contents.bool_contents.extend(values.astype(bool).tolist())
    else:
        contents.fp64_contents.extend(values.astype(np.float64).tolist())
