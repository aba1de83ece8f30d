"""The server's life: listen, load, serve, drain.

start()  listen first (liveness answers at once; readiness is 503), then load and verify the
         artifact on the model thread, importing scikit-learn there, so the loop stays free;
run()    -> exit code: 0 after a clean stop; 2 when the artifact is refused (sha256 mismatch,
         corrupted or untrusted file, bad signature), which restarting cannot fix; 1 when
         the port cannot be bound (and for crashes);
stop()   thread-safe; what SIGTERM/SIGINT call: readiness turns 503, the listener closes,
         in-flight requests finish (up to `shutdown_timeout`), logs are flushed. The gRPC
         endpoint (when `grpc_port` is set) starts and drains alongside HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Final

from mlops_contract import stats
from mlops_contract.artifact import ArtifactError
from mlops_server import logs
from mlops_server.app import App
from mlops_server.codec import Array, Prediction
from mlops_server.config import Settings, split_http_url
from mlops_server.http import HttpServer, Limits
from mlops_server.signature import Kind

if TYPE_CHECKING:
    from mlops_server.grpcapi import GrpcServer
    from mlops_server.model import ServedModel
    from mlops_server.monitoring import Metrics
    from mlops_server.shadow import Mirror

log = logs.get("lifecycle")

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_REFUSED: Final = 2
FLUSH_INTERVAL: Final = 1.0


def load_model(settings: Settings) -> ServedModel:
    # Imported here so numpy (and pandas and scikit-learn, when the model needs them) load on the
    # model thread, after the port is open.
    from mlops_server.model import ServedModel

    return ServedModel.load(
        settings.artifact, settings.sha256, settings.model_name, settings.model_version, settings.runtime
    )


def limits_for(settings: Settings) -> Limits:
    return Limits(
        max_body_bytes=settings.max_body_bytes,
        max_url_bytes=settings.max_url_bytes,
        max_header_bytes=settings.max_header_bytes,
        max_headers=settings.max_headers,
        max_pipeline_bytes=settings.max_pipeline_bytes,
        max_connections=settings.max_connections,
        idle_timeout=settings.idle_timeout,
        header_timeout=settings.header_timeout,
        body_timeout=settings.body_timeout,
    )


class Server:
    def __init__(self, settings: Settings, started: float | None = None, freeze_heap: bool = False) -> None:
        """`freeze_heap`: after loading, move every object alive then (scikit-learn, pandas, the
        model: hundreds of thousands) out of the garbage collector's reach. Without it, each
        full collection walks them all and stalls serving for 50-90 ms, which is the p99.
        For the real process (`__main__`); tests share their interpreter and leave it off.
        """
        self.settings = settings
        self.freeze_heap = freeze_heap
        self.started = time.perf_counter() if started is None else started
        self.app = App(
            settings.model_name,
            max_rows=settings.max_rows,
            offload_bytes=settings.offload_bytes,
            max_body_bytes=settings.max_body_bytes,
            feedback_token=settings.feedback_token,
        )
        # With a monitoring port, two listeners share the App: prediction on one, /metrics and
        # feedback on the other (issue #19); otherwise one listener serves every route.
        split = settings.monitoring_port is not None
        handler = self.app.handle_prediction if split else self.app.handle
        self.http = HttpServer(handler, limits_for(settings), settings.access_log)
        self.monitoring_http = (
            HttpServer(self.app.handle_monitoring, limits_for(settings), settings.access_log)
            if split
            else None
        )
        self.monitoring_port: int | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlops-model")
        self.grpc: GrpcServer | None = None
        if settings.grpc_port is not None:
            # grpc's C core writes its own plain-text lines on stderr; every failure it reports
            # reaches our JSON log as an exception or a status anyway (GRPC_VERBOSITY=debug brings
            # them back when needed).
            os.environ.setdefault("GRPC_VERBOSITY", "NONE")
            from mlops_server.grpcapi import GrpcServer  # grpc loads only when a gRPC port is asked for

            self.grpc = GrpcServer(
                self.app,
                max_message_bytes=settings.max_body_bytes,
                max_metadata_bytes=settings.max_header_bytes,
                max_streams=settings.grpc_max_streams,
                max_connections=settings.max_connections,
                idle_timeout=settings.idle_timeout,
            )
        self.port = 0
        self.grpc_port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = asyncio.Event()  # binds to the loop on first wait (Python >= 3.10)
        self._started = False

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._started = True
        self.port = await self.http.start(self.settings.host, self.settings.port)
        fields: dict[str, Any] = {"host": self.settings.host, "port": self.port}
        if self.monitoring_http is not None and self.settings.monitoring_port is not None:
            try:
                self.monitoring_port = await self.monitoring_http.start(
                    self.settings.host, self.settings.monitoring_port
                )
            except OSError:
                self.http.begin_shutdown()  # every port or none
                await self.http.drain(0)
                raise
            fields["monitoring_port"] = self.monitoring_port
        if self.grpc is not None and self.settings.grpc_port is not None:
            try:
                self.grpc_port = await self.grpc.start(self.settings.host, self.settings.grpc_port)
            except OSError:
                for server in (self.http, self.monitoring_http):
                    if server is not None:
                        server.begin_shutdown()
                        await server.drain(0)
                raise
            fields["grpc_port"] = self.grpc_port
        log.info("Started listening", extra={"fields": {**fields, "artifact": self.settings.artifact}})

    def stop(self) -> None:
        """Begin a graceful stop; safe from signal handlers and other threads."""
        loop = self._loop
        if loop is None:
            self._stop.set()  # not running yet: nobody waits, so setting it from here is safe
        elif not loop.is_closed():
            loop.call_soon_threadsafe(self._stop.set)

    async def run(self) -> int:
        if not self._started:
            try:
                await self.start()
            except OSError as e:
                fields: dict[str, Any] = {"host": self.settings.host, "port": self.settings.port}
                if self.settings.grpc_port is not None:
                    fields["grpc_port"] = self.settings.grpc_port
                log.error("Failed to listen", extra={"fields": {**fields, "error": str(e)}})
                self.executor.shutdown(wait=False)
                return EXIT_FAILED
        assert self._loop is not None
        loop = self._loop
        loading: asyncio.Future[ServedModel] = loop.run_in_executor(self.executor, load_model, self.settings)
        stopping: asyncio.Future[bool] = asyncio.ensure_future(self._stop.wait())
        either: list[asyncio.Future[Any]] = [loading, stopping]
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if not loading.done():
            log.info("Stopped before the model finished loading")
            stopping.cancel()
            await self._drain()
            self.executor.shutdown(wait=False, cancel_futures=True)
            return EXIT_OK
        try:
            model = loading.result()
        except ArtifactError as e:
            log.error(
                "Refused to serve the artifact",
                extra={"fields": {"artifact": self.settings.artifact, "error": str(e)}},
            )
            stopping.cancel()
            await self._drain()
            self.executor.shutdown(wait=False)
            return EXIT_REFUSED
        except Exception:
            stopping.cancel()
            await self._drain()
            self.executor.shutdown(wait=False)
            raise
        self._attach(model)
        if self.freeze_heap:
            gc.collect()
            gc.freeze()
        log.info(
            "Loaded model",
            extra={
                "fields": {
                    "model": model.name,
                    "version": model.version,
                    "sha256": model.sha256,
                    "task": model.signature.task,
                    "features": len(model.signature.features),
                    "runtime": model.runtime,
                    "load_seconds": round(model.load_seconds, 4),
                    "ready_seconds": round(time.perf_counter() - self.started, 4),
                }
            },
        )
        flusher = asyncio.ensure_future(self._flush_periodically())
        await stopping
        log.info("Draining: readiness is 503 and new connections are refused")
        await self._drain()
        flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher
        if self.app.mirror is not None:
            await self.app.mirror.stop()
        self.app.close()
        self.executor.shutdown(wait=True)
        if self.app.predlog is not None:
            self.app.predlog.flush()
        log.info("Stopped", extra={"fields": {"model": model.name, "version": model.version}})
        return EXIT_OK

    async def _drain(self) -> None:
        self.app.closing = True
        servers = [self.http] + ([self.monitoring_http] if self.monitoring_http is not None else [])
        for server in servers:
            server.begin_shutdown()
        timeout = self.settings.shutdown_timeout
        grpc_stopped = asyncio.ensure_future(self.grpc.stop(timeout)) if self.grpc is not None else None
        drained = await asyncio.gather(*(s.drain(timeout) for s in servers))
        if not all(drained):
            log.warning("Closed connections that were still busy at the shutdown timeout")
        if grpc_stopped is not None:
            await grpc_stopped

    def _attach(self, model: ServedModel) -> None:
        from mlops_server.batching import Batcher
        from mlops_server.monitoring import DriftMonitor, FeedbackStore, Metrics
        from mlops_server.predlog import PredictionLog

        settings = self.settings
        sig = model.signature
        reference = model.metadata.get("reference")
        calibration = (
            stats.Calibration.from_dict(model.metadata.get("calibration"))
            if sig.classification and model.has_proba
            else None
        )
        prediction_ref = reference.get("prediction") if isinstance(reference, dict) else None
        metrics = Metrics(
            model.name,
            model.version,
            model.sha256,
            features=sig.names,
            classification=sig.classification,
            prediction_reference=prediction_ref,
            calibrated=calibration is not None,
        )
        label_dtype = (
            model.classes.dtype
            if model.classes is not None and model.classes.dtype.kind in "iufb"
            else object
        )
        drift = DriftMonitor(
            reference,
            sig.names,
            sig.numeric,
            settings.drift_window,
            label_dtype if sig.classification else float,
            calibration=calibration,
        )
        feedback = FeedbackStore(
            settings.feedback_capacity,
            settings.drift_window,
            sig.classification,
            max_bytes=settings.feedback_max_bytes,
        )
        predlog = None
        if settings.prediction_log:
            predlog = PredictionLog(
                settings.prediction_log,
                model.name,
                model.version,
                sig.names,
                sample_rate=settings.log_sample_rate,
                integer_features=[i for i, f in enumerate(sig.features) if f.kind is Kind.INT],
            )

        def observe(frame: Array, prediction: Prediction) -> None:
            metrics.observe_batch(prediction.labels)
            drift.add(frame, prediction.labels, prediction.proba)

        assert self._loop is not None
        batcher = Batcher(
            self._loop,
            model.predict,
            self.executor,
            max_rows=settings.max_batch_size,
            max_delay=settings.max_batch_delay_ms / 1000.0,
            observe=observe,
            always_proba=drift.wants_proba,
        )
        self.app.attach(
            model, batcher=batcher, metrics=metrics, drift=drift, feedback=feedback, predlog=predlog
        )
        if settings.shadow_url is not None:
            self.app.mirror = self._mirror(settings.shadow_url, metrics)

    def _mirror(self, url: str, metrics: Metrics) -> Mirror:
        """Shadow mode (issue #22): the mirror to the challenger, started on this loop."""
        from mlops_server.shadow import Mirror

        settings = self.settings
        host, port = split_http_url(url)
        mirror = Mirror(
            host,
            port,
            percent=settings.shadow_percent,
            timeout=settings.shadow_timeout_ms / 1000.0,
            on_answer=self.app.shadow_answered,
            count=metrics.count_shadow,
            concurrency=settings.shadow_concurrency,
            queue=settings.shadow_queue,
        )
        mirror.start()
        log.info("Mirroring requests", extra={"fields": {"to": url, "percent": settings.shadow_percent}})
        return mirror

    async def _flush_periodically(self) -> None:
        predlog = self.app.predlog
        if predlog is None:
            return
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            try:
                # A worker thread of its own: a slow volume must not stall the loop or the model.
                await loop.run_in_executor(None, predlog.flush)
            except OSError as e:
                log.error("Failed to write the prediction log", extra={"fields": {"error": str(e)}})
