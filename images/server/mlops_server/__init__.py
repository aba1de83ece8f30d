"""The mlops-operator inference server.

Serves one verified scikit-learn artifact (see `mlops_operator.artifact`) over HTTP:
the Open Inference Protocol (V2) and KServe V1 for predictions, a feedback endpoint for
ground-truth labels, and `/metrics` with request, batch, drift and accuracy series that the
operator scrapes into `InferenceService.status.metrics`.

Layers (each module imports only those below it):

    __main__     settings in, exit code out; signals and the serve/drain lifecycle
    http         asyncio + httptools connections: parsing, keep-alive, pipelining, limits
    app          routes and handlers; the one place that maps errors to HTTP statuses
    batching     adaptive micro-batching of concurrent requests into one model call
    codec        pure: request bodies -> validated feature frames, results -> response bodies
    monitoring   Prometheus registry, drift windows, labelled-feedback store
    predlog      buffered JSON-lines prediction and feedback logs
    model        the loaded pipeline, its signature, and batch prediction
"""

from __future__ import annotations

from typing import Final

__version__: Final = "0.1.0"
