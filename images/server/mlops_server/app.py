"""Routes and handlers; the one place where errors become HTTP statuses.

Open Inference Protocol (V2):
    GET  /v2                                    server metadata
    GET  /v2/health/live | /v2/health/ready     200, or 503 until the model is loaded / while draining
    GET  /v2/models/{m}[/versions/{v}]          model metadata
    GET  /v2/models/{m}[/versions/{v}]/ready
    POST /v2/models/{m}[/versions/{v}]/infer
  Triton's extensions, for the one served model:
    POST /v2/repository/index                   [{"name", "version", "state": "READY"}]
    GET  /v2/models/{m}[/versions/{v}]/config   the model configuration (inputs, outputs, batching)
    GET  /v2/models[/{m}[/versions/{v}]]/stats  inference statistics (counts and nanoseconds)
KServe V1:
    GET  /v1/models | /v1/models/{m}            readiness
    POST /v1/models/{m}:predict                 {"instances": [...]} -> {"predictions": [...]}
Ours:
    POST /v2/models/{m}/feedback                {"id": ..., "labels": [...]} -> rolling accuracy / rmse
                                                (202 for an id another replica served: logged for retraining)
    GET  /metrics                               Prometheus exposition
  With --monitoring-port, /metrics and feedback are served on that port only (with the health
  checks) and the prediction port answers them 404; with MLOPS_FEEDBACK_TOKEN set, feedback
  needs `Authorization: Bearer <token>` (401 otherwise).
    GET  /                                      KServe V1 liveness: {"status": "alive"}

Request bodies may be gzip or deflate (`Content-Encoding`), decompressed to the body limit at
most (413 beyond it).

Limits: a request's rows (`max_rows`) are checked from the declared shape or instance count
before any tensor data is decoded (413 naming the limit); `parameters` nested deeper than
`MAX_PARAMETER_DEPTH` is a 400. Bodies from `offload_bytes` up are decoded on a worker thread
(the loop keeps answering health probes while a large request decodes); prediction always
runs on the model thread (`mlops_server.batching`).

Error mapping: `RequestError` -> its status (400/404/405/409/503); `ModelInputError` (the model
rejected the values) -> 400; `FeedbackError` -> its status; anything else -> 500, logged with
its traceback, and the server keeps serving. Every error body is `{"error": "<message>"}`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Final

import orjson

from mlops_server import __version__, codec, logs
from mlops_server.codec import OUTPUT_PREDICT, OUTPUT_PROBA, ModelInputError, Prediction, RequestError
from mlops_server.http import Request, Respond, Response, error, quoted
from mlops_server.monitoring import FeedbackError, agreement, score_pairs
from mlops_server.shadow import Copy

if TYPE_CHECKING:
    from mlops_server.batching import Batcher, Outcome
    from mlops_server.model import ServedModel
    from mlops_server.monitoring import DriftMonitor, FeedbackStore, Metrics
    from mlops_server.predlog import PredictionLog
    from mlops_server.shadow import Answer, Mirror

log = logs.get("app")

SERVER_NAME: Final = "mlops-server"
PROMETHEUS: Final = b"text/plain; version=0.0.4; charset=utf-8"
_GET: Final = ("GET",)
_POST: Final = ("POST",)
MAX_PARAMETER_DEPTH: Final = 16
# Triton extension names this server implements (repository index only, no load/unload).
EXTENSIONS: Final = ("binary_tensor_data", "parameters", "model_configuration", "statistics")


class _EncodeError(Exception):
    """The answer could not be encoded as JSON: a 500 that says so."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(f"failed to encode the response: {type(cause).__name__}: {quoted(str(cause))}")


class App:
    """Serving state plus the request handler (`handle`), used by `mlops_server.http`."""

    def __init__(
        self,
        model_name: str | None = None,
        *,
        max_rows: int = 65536,
        offload_bytes: int = 64 << 10,
        max_body_bytes: int = 8 << 20,
        feedback_token: str | None = None,
    ) -> None:
        self.model_name = model_name
        self._feedback_token = feedback_token.encode() if feedback_token else None
        self.max_body_bytes = max_body_bytes
        self.stats = _Stats()
        self.max_rows = max_rows
        self.offload_bytes = offload_bytes
        self._decoder: ThreadPoolExecutor | None = None
        self.model: ServedModel | None = None
        self.batcher: Batcher | None = None
        self.metrics: Metrics | None = None
        self.drift: DriftMonitor | None = None
        self.feedback: FeedbackStore | None = None
        self.predlog: PredictionLog | None = None
        self.mirror: Mirror | None = None  # shadow mode (issue #22): set by the lifecycle
        self.closing = False

    def attach(
        self,
        model: ServedModel,
        *,
        batcher: Batcher,
        metrics: Metrics,
        drift: DriftMonitor,
        feedback: FeedbackStore,
        predlog: PredictionLog | None,
    ) -> None:
        self.model_name = model.name
        self.batcher = batcher
        self.metrics = metrics
        self.drift = drift
        self.feedback = feedback
        self.predlog = predlog
        self.model = model  # last: handlers treat a set model as "everything attached"

    def close(self) -> None:
        """Stop the decode thread (after the HTTP layer drained)."""
        if self._decoder is not None:
            self._decoder.shutdown(wait=True)

    def decoder(self) -> ThreadPoolExecutor:
        """The thread that decodes requests of `offload_bytes` and more, off the event loop."""
        if self._decoder is None:
            self._decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlops-decode")
        return self._decoder

    @property
    def ready(self) -> bool:
        return self.model is not None and not self.closing

    # --- dispatch --------------------------------------------------------------------------

    def handle(self, request: Request, respond: Respond) -> None:
        """Every route, on one port (the server without --monitoring-port)."""
        self._handle(request, respond, None)

    def handle_prediction(self, request: Request, respond: Respond) -> None:
        """The prediction port when monitoring has its own: everything but /metrics and feedback."""
        self._handle(request, respond, "prediction")

    def handle_monitoring(self, request: Request, respond: Respond) -> None:
        """The monitoring port: /metrics, feedback and the health checks, nothing else."""
        self._handle(request, respond, "monitoring")

    def _on_port(
        self, route: tuple[tuple[str, ...], Callable[..., None], tuple[str, ...]] | None, port: str | None
    ) -> bool:
        """Whether a route is served on `port` (issue #19: a NetworkPolicy tells ports apart, not paths)."""
        if route is None or port is None:
            return True
        handler = route[1]
        if handler in (self._metrics, self._feedback):
            return port == "monitoring"
        return port == "prediction" or handler in (self._live, self._ready)

    def _handle(self, request: Request, respond: Respond, port: str | None) -> None:
        parts = request.path.strip("/").split("/")
        method = request.method
        try:
            route = self._route(parts)
            if not self._on_port(route, port):
                other = "prediction" if port == "monitoring" else "monitoring"
                raise RequestError(f"{quoted(request.path)} is served on the {other} port", 404)
            if route is None:
                raise RequestError(f"no route for {quoted(request.path)}", 404)
            methods, handler, args = route
            if method not in methods:
                respond(
                    Response(
                        405,
                        orjson.dumps(
                            {
                                "error": f"method {quoted(method)} is not allowed on {quoted(request.path)}; "
                                f"use {', '.join(methods)}"
                            }
                        ),
                        headers=((b"allow", ", ".join(methods).encode()),),
                    )
                )
                return
            handler(request, respond, *args)
        except Exception as e:
            respond(self._error(e, request))

    def _route(self, parts: list[str]) -> tuple[tuple[str, ...], Callable[..., None], tuple[str, ...]] | None:
        n = len(parts)
        head = parts[0]
        if head == "v2":
            if n == 1:
                return _GET, self._server_metadata, ()
            if parts[1] == "models" and n >= 3:
                name = parts[2]
                if n == 3 and name == "stats":
                    return _GET, self._statistics, ("", "")
                if n == 4:
                    if parts[3] == "infer":
                        return _POST, self._v2_infer, (name, "")
                    if parts[3] == "config":
                        return _GET, self._model_config, (name, "")
                    if parts[3] == "stats":
                        return _GET, self._statistics, (name, "")
                    if parts[3] == "ready":
                        return _GET, self._model_ready, (name, "")
                    if parts[3] == "feedback":
                        return _POST, self._feedback, (name,)
                    return None
                if n == 3:
                    return _GET, self._model_metadata, (name, "")
                if parts[3] == "versions" and n >= 5:
                    version = parts[4]
                    if n == 5:
                        return _GET, self._model_metadata, (name, version)
                    if n == 6 and parts[5] == "infer":
                        return _POST, self._v2_infer, (name, version)
                    if n == 6 and parts[5] == "ready":
                        return _GET, self._model_ready, (name, version)
                    if n == 6 and parts[5] == "config":
                        return _GET, self._model_config, (name, version)
                    if n == 6 and parts[5] == "stats":
                        return _GET, self._statistics, (name, version)
                return None
            if n == 3 and parts[1] == "repository" and parts[2] == "index":
                return _POST, self._repository_index, ()
            if n == 3 and parts[1] == "health" and parts[2] in ("live", "ready"):
                return _GET, self._live if parts[2] == "live" else self._ready, ()
            return None
        if head == "v1" and n >= 2 and parts[1] == "models":
            if n == 2:
                return _GET, self._v1_models, ()
            if n == 3:
                name, sep, verb = parts[2].rpartition(":")
                if sep and verb == "predict":
                    return _POST, self._v1_predict, (name,)
                return _GET, self._v1_model, (parts[2],)
            return None
        if n == 1 and head == "metrics":
            return _GET, self._metrics, ()
        if n == 1 and head == "":
            return _GET, self._alive, ()
        return None

    def _error(self, exc: BaseException, request: Request) -> Response:
        status, message = self.classify(exc, request.method, quoted(request.path))
        return error(status, message)

    def classify(self, exc: BaseException, method: str, path: str) -> tuple[int, str]:
        """The HTTP status and message for a failure, for every protocol (gRPC maps the status
        to its own codes); unexpected errors are logged here with their traceback."""
        if isinstance(exc, (RequestError, FeedbackError)):
            return exc.status, exc.message
        if isinstance(exc, _EncodeError):
            log.error("Failed to encode a response", extra={"fields": {"path": path, "error": str(exc)}})
            return 500, str(exc)
        if isinstance(exc, ModelInputError):
            return 400, f"the model rejected the input: {exc}"
        log.error(
            "Failed to handle a request",
            exc_info=(type(exc), exc, exc.__traceback__),
            extra={"fields": {"method": method, "path": path, "error": repr(exc)}},
        )
        return 500, f"internal server error: {type(exc).__name__}"

    def serving(self, name: str, version: str = "") -> ServedModel:
        model = self.model
        if self.model_name is not None and name != self.model_name:
            raise RequestError(f"model '{name}' not found; this server serves '{self.model_name}'", 404)
        if model is None:
            raise RequestError(f"model '{name}' is not loaded yet", 503)
        if version and version != model.version:
            raise RequestError(f"model '{name}' has no version '{version}'; it serves '{model.version}'", 404)
        return model

    # --- health and metadata ---------------------------------------------------------------

    def _live(self, request: Request, respond: Respond) -> None:
        respond(Response(200, b'{"live":true}'))

    def _alive(self, request: Request, respond: Respond) -> None:
        respond(Response(200, b'{"status":"alive"}'))

    def _ready(self, request: Request, respond: Respond) -> None:
        if self.ready:
            respond(Response(200, b'{"ready":true}'))
        else:
            respond(error(503, "shutting down" if self.closing else "model is not loaded yet", ready=False))

    def _server_metadata(self, request: Request, respond: Respond) -> None:
        respond(
            Response(
                200,
                orjson.dumps({"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}),
            )
        )

    def _model_metadata(self, request: Request, respond: Respond, name: str, version: str) -> None:
        respond(Response(200, orjson.dumps(self.serving(name, version).metadata_v2())))

    def _model_ready(self, request: Request, respond: Respond, name: str, version: str) -> None:
        model = self.serving(name, version)
        if self.closing:
            respond(error(503, "shutting down", name=model.name, ready=False))
        else:
            respond(Response(200, orjson.dumps({"name": model.name, "ready": True})))

    def _repository_index(self, request: Request, respond: Respond) -> None:
        respond(Response(200, orjson.dumps(self.repository_index())))

    def repository_index(self) -> list[dict[str, Any]]:
        model = self.model
        entries = []
        if self.model_name is not None:
            entry: dict[str, Any] = {"name": self.model_name}
            if model is not None:
                entry["version"] = model.version
            entry["state"] = "READY" if self.ready else "UNAVAILABLE"
            if not self.ready:
                entry["reason"] = "shutting down" if self.closing else "model is not loaded yet"
            entries.append(entry)
        return entries

    def _model_config(self, request: Request, respond: Respond, name: str, version: str) -> None:
        respond(Response(200, orjson.dumps(self.model_config(self.serving(name, version)))))

    def model_config(self, model: ServedModel) -> dict[str, Any]:
        """Triton's model configuration of the served model (both protocols)."""
        meta = model.metadata_v2()

        def tensor(t: dict[str, Any]) -> dict[str, Any]:
            return {
                "name": t["name"],
                "data_type": f"TYPE_{t['datatype'].replace('BYTES', 'STRING')}",
                "dims": t["shape"],
            }

        config = {
            "name": model.name,
            "platform": "sklearn",
            "backend": SERVER_NAME,
            "version_policy": {"specific": {"versions": [model.version]}},
            # Shapes carry the batch dimension themselves (-1), as the V2 metadata does.
            "max_batch_size": 0,
            "input": [tensor(t) for t in meta["inputs"]],
            "output": [tensor(t) for t in meta["outputs"]],
            "parameters": {k: {"string_value": str(v)} for k, v in meta["parameters"].items()},
        }
        return config

    def _statistics(self, request: Request, respond: Respond, name: str, version: str) -> None:
        if name:
            self.serving(name, version)
        model = self.model
        entries = []
        if model is not None:
            entries.append(self.stats.document(model.name, model.version))
        respond(Response(200, orjson.dumps({"model_stats": entries})))

    def _v1_models(self, request: Request, respond: Respond) -> None:
        respond(Response(200, orjson.dumps({"models": [self.model_name] if self.model_name else []})))

    def _v1_model(self, request: Request, respond: Respond, name: str) -> None:
        self._model_ready(request, respond, name, "")

    def _metrics(self, request: Request, respond: Respond) -> None:
        metrics, drift, feedback = self.metrics, self.drift, self.feedback
        if metrics is None or drift is None or feedback is None:
            respond(Response(200, b"", content_type=PROMETHEUS))
            return
        features, prediction, rows = drift.compute()
        metrics.set_drift(features, prediction, rows)
        metrics.set_estimate(drift.estimated_accuracy()[0])
        respond(Response(200, metrics.exposition(), content_type=PROMETHEUS))

    # --- inference -------------------------------------------------------------------------

    def _decode(
        self,
        request: Request,
        respond: Respond,
        protocol: str,
        decode: Callable[[], Any],
        proceed: Callable[[Any], None],
    ) -> None:
        """Run `decode` (inline when small, else on the decode thread), then `proceed` on the loop."""
        if len(request.body) < self.offload_bytes:
            try:
                value = decode()
            except Exception as e:
                self._answer_error(request, respond, e, protocol)
                return
            proceed(value)
            return
        future = asyncio.get_running_loop().run_in_executor(self.decoder(), decode)

        def decoded(done: asyncio.Future[Any]) -> None:
            try:
                result = done.result()
            except Exception as e:
                self._answer_error(request, respond, e, protocol)
                return
            proceed(result)

        future.add_done_callback(decoded)

    def _v2_infer(self, request: Request, respond: Respond, name: str, version: str) -> None:
        try:
            model = self.serving(name, version)
        except Exception as e:
            self._answer_error(request, respond, e, "v2")
            return
        max_rows = self.max_rows

        def decode() -> codec.V2Request:
            parsed = codec.parse_v2(
                self._payload(request), model.signature, model.outputs, request.json_length, max_rows
            )
            if parsed.parameters and _depth(parsed.parameters) > MAX_PARAMETER_DEPTH:
                raise RequestError(f"parameters are nested more than {MAX_PARAMETER_DEPTH} levels deep")
            return parsed

        self._decode(
            request, respond, "v2", decode, lambda parsed: self._v2_predict(request, respond, model, parsed)
        )

    def _v2_predict(
        self, request: Request, respond: Respond, model: ServedModel, parsed: codec.V2Request
    ) -> None:
        outputs = parsed.outputs
        frame = parsed.frame
        if request.mirror_id:  # a champion mirrored this request: answer under its id
            parsed = dataclasses.replace(parsed, id=request.mirror_id)

        def done(outcome: Outcome) -> None:
            if not isinstance(outcome, Prediction):
                self._answer_error(request, respond, outcome, "v2")
                return
            n = len(frame)
            tensors: list[dict[str, Any]] = []
            for output in outputs:
                if output == OUTPUT_PREDICT:
                    tensors.append(
                        {
                            "name": OUTPUT_PREDICT,
                            "datatype": model.label_datatype,
                            "shape": [n],
                            "data": codec.to_json_array(outcome.labels),
                        }
                    )
                elif output == OUTPUT_PROBA and outcome.proba is not None:
                    proba = outcome.proba
                    tensors.append(
                        {
                            "name": OUTPUT_PROBA,
                            "datatype": "FP64",
                            "shape": [n, proba.shape[1]],
                            "data": codec.to_json_array(proba.reshape(-1)),
                        }
                    )
            doc: dict[str, Any] = {"model_name": model.name, "model_version": model.version, "id": parsed.id}
            if parsed.parameters:
                doc["parameters"] = parsed.parameters
            doc["outputs"] = tensors
            try:
                body = codec.dumps(doc)
            except Exception as e:
                self._answer_error(request, respond, _EncodeError(e), "v2")
                return
            self._answered(
                request,
                respond,
                Response(200, body),
                protocol="v2",
                request_id=parsed.id,
                frame=frame,
                prediction=outcome,
            )
            if self.mirror is not None:
                copy = Copy(f"/v2/models/{model.name}/infer", request.body, parsed.id, request.encoding)
                self.mirror.offer(copy if request.json_length is None else _binary(copy, request))

        self.submit(frame, OUTPUT_PROBA in outputs, done)

    def _v1_predict(self, request: Request, respond: Respond, name: str) -> None:
        try:
            model = self.serving(name)
        except Exception as e:
            self._answer_error(request, respond, e, "v1")
            return
        max_rows = self.max_rows
        self._decode(
            request,
            respond,
            "v1",
            lambda: codec.parse_v1(self._payload(request), model.signature, max_rows),
            lambda frame: self._v1_answer(request, respond, model, frame),
        )

    def _v1_answer(self, request: Request, respond: Respond, model: ServedModel, frame: codec.Array) -> None:
        # A champion mirrored this request (shadow mode): answer under its id, with the version.
        request_id = request.mirror_id or str(uuid.uuid4())

        def done(outcome: Outcome) -> None:
            if not isinstance(outcome, Prediction):
                self._answer_error(request, respond, outcome, "v1")
                return
            doc: dict[str, Any] = {"predictions": codec.to_json_array(outcome.labels), "id": request_id}
            if request.mirror_id:
                doc["model_version"] = model.version
            try:
                body = codec.dumps(doc)
            except Exception as e:
                self._answer_error(request, respond, _EncodeError(e), "v1")
                return
            self._answered(
                request,
                respond,
                Response(200, body),
                protocol="v1",
                request_id=request_id,
                frame=frame,
                prediction=outcome,
            )
            if self.mirror is not None:
                path = f"/v1/models/{model.name}:predict"
                self.mirror.offer(Copy(path, request.body, request_id, request.encoding))

        self.submit(frame, False, done)

    def _payload(self, request: Request) -> bytes:
        """The request body, decompressed when it has a Content-Encoding (bounded by the body limit)."""
        if request.encoding:
            return codec.inflate(request.body, request.encoding, self.max_body_bytes)
        return request.body

    def submit(self, frame: codec.Array, want_proba: bool, done: Callable[[Outcome], None]) -> None:
        batcher = self.batcher
        assert batcher is not None  # _serving() returned a model, so attach() ran
        batcher.submit(frame, want_proba, done)

    def _answered(
        self,
        request: Request,
        respond: Respond,
        response: Response,
        *,
        protocol: str,
        request_id: str,
        frame: codec.Array,
        prediction: Prediction,
    ) -> None:
        respond(response)
        self.record_success(protocol, _elapsed(request), request_id, frame, prediction)

    def record_success(
        self, protocol: str, seconds: float, request_id: str, frame: codec.Array, prediction: Prediction
    ) -> None:
        """Account for an answered inference request: statistics, metrics, feedback memory, log."""
        self.stats.success(seconds, len(frame))
        metrics, feedback, predlog = self.metrics, self.feedback, self.predlog
        if metrics is not None:
            metrics.count_request(protocol, 200, seconds)
        if feedback is not None:
            feedback.remember(request_id, frame, prediction.labels)
        if predlog is not None and predlog.sampled():
            predlog.predictions(request_id, frame, prediction.labels)

    def record_failure(self, protocol: str, status: int, seconds: float) -> None:
        self.stats.failure(seconds)
        if self.metrics is not None:
            self.metrics.count_request(protocol, status, seconds)

    def _answer_error(self, request: Request, respond: Respond, exc: BaseException, protocol: str) -> None:
        response = self._error(exc, request)
        respond(response)
        self.record_failure(protocol, response.status, _elapsed(request))

    def shadow_answered(self, answer: Answer) -> None:
        """The challenger's answer to a mirrored request: remembered for feedback, its
        agreement with the champion counted, both predictions logged under the same id."""
        store, metrics = self.feedback, self.metrics
        if store is None or metrics is None:
            return
        served = store.shadow_answer(answer.request_id, answer.labels, answer.version)
        if served is None:
            return
        champion = served.labels.tolist()
        metrics.count_agreement(answer.version, *agreement(store.classification, champion, answer.labels))
        if self.predlog is not None:
            self.predlog.shadow(answer.request_id, answer.version, answer.labels)

    # --- feedback --------------------------------------------------------------------------

    def _authorized(self, request: Request) -> bool:
        """Whether feedback carries the bearer token, when one is set (compared in constant time)."""
        token = self._feedback_token
        if token is None:
            return True
        scheme, _, credentials = request.authorization.strip().partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), token)

    def _feedback(self, request: Request, respond: Respond, name: str) -> None:
        if not self._authorized(request):
            refusal = orjson.dumps({"error": "feedback needs the header Authorization: Bearer <token>"})
            respond(Response(401, refusal, headers=((b"www-authenticate", b'Bearer realm="feedback"'),)))
            return
        model = self.serving(name)
        store, metrics = self.feedback, self.metrics
        assert store is not None and metrics is not None
        doc = codec.loads(self._payload(request))
        if not isinstance(doc, dict):
            raise RequestError('feedback must be a JSON object {"id": ..., "labels": [...]}')
        request_id = doc.get("id")
        if not isinstance(request_id, str) or not request_id:
            raise RequestError("feedback needs the 'id' of the answered request")
        if "labels" in doc:
            labels = doc["labels"]
            if not isinstance(labels, list):
                raise RequestError("labels must be an array with one label per row")
        elif "label" in doc:
            labels = [doc["label"]]
        else:
            raise RequestError("feedback needs 'labels' (one per row) or 'label' (for a one-row request)")
        try:
            served = store.label(request_id, labels)
        except FeedbackError as e:
            if e.status != 404 or self.predlog is None:
                raise
            # Another replica answered this id (or it left this pod's memory): keep the labels
            # for training, joined by id with the prediction log; not in this pod's accuracy.
            store.check_labels(labels)
            self.predlog.relayed(request_id, labels)
            relayed = {
                "id": request_id,
                "model": model.name,
                "version": model.version,
                "counted": False,
                "message": "request not served by this replica; labels kept in the prediction log for retraining",
            }
            respond(Response(202, orjson.dumps(relayed)))
            return
        quality = store.quality
        metrics.set_feedback(store.samples, quality)
        metrics.count_labelled(served.scores)
        if served.shadow is not None:
            pairs = score_pairs(store.classification, served.labels.tolist(), served.shadow, labels)
            metrics.count_pairs(served.shadow_version, pairs)
        if self.predlog is not None:
            self.predlog.feedback(request_id, served.frame, served.labels, labels)
        body = {
            "id": request_id,
            "model": model.name,
            "version": model.version,
            "samples": store.samples,
            ("accuracy" if store.classification else "rmse"): quality,
        }
        respond(Response(200, orjson.dumps(body)))


class _Stats:
    """Triton's inference statistics for the served model, as far as this server measures them."""

    def __init__(self) -> None:
        self.success_count = 0
        self.success_ns = 0
        self.fail_count = 0
        self.fail_ns = 0
        self.rows = 0
        self.last_ms = 0

    def success(self, seconds: float, rows: int) -> None:
        self.success_count += 1
        self.success_ns += int(seconds * 1e9)
        self.rows += rows
        self.last_ms = int(time.time() * 1000)

    def failure(self, seconds: float) -> None:
        self.fail_count += 1
        self.fail_ns += int(seconds * 1e9)

    def document(self, name: str, version: str) -> dict[str, Any]:
        zero = {"count": 0, "ns": 0}
        return {
            "name": name,
            "version": version,
            "last_inference": self.last_ms,
            "inference_count": self.rows,
            "execution_count": self.success_count,
            "inference_stats": {
                "success": {"count": self.success_count, "ns": self.success_ns},
                "fail": {"count": self.fail_count, "ns": self.fail_ns},
                # Not measured apart: queueing, decoding and encoding are inside "success".
                "queue": zero,
                "compute_input": zero,
                "compute_infer": zero,
                "compute_output": zero,
            },
            "batch_stats": [],
        }


def _depth(value: Any) -> int:
    """Levels of objects and arrays in decoded JSON, counted no further than past the limit."""
    depth = 0
    level = [value]
    while depth <= MAX_PARAMETER_DEPTH:
        containers = [item for item in level if isinstance(item, (dict, list))]
        if not containers:
            return depth
        depth += 1
        level = [v for c in containers for v in (c.values() if isinstance(c, dict) else c)]
    return depth


def _binary(copy: Copy, request: Request) -> Copy:
    return dataclasses.replace(copy, json_length=request.json_length)


def _elapsed(request: Request) -> float:
    return time.perf_counter() - request.started
