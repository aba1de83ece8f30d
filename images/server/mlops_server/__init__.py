"""The mlops-operator inference server.

Serves one verified scikit-learn artifact (see `mlops_contract.artifact`) over HTTP:
the Open Inference Protocol (V2) and KServe V1 for predictions, a feedback endpoint for
ground-truth labels, and `/metrics` with request, batch, drift and accuracy series that the
operator scrapes into `InferenceService.status.metrics`.

Layers (each module imports only those below it):

    __main__     settings in, exit code out; signals
    lifecycle    listen, load and verify off the loop, serve, drain on SIGTERM
    app          routes and handlers; the one place that maps errors to HTTP statuses
    http         asyncio + httptools connections: parsing, keep-alive, pipelining, limits
    batching     adaptive micro-batching of concurrent requests into one model call
    model        the loaded pipeline and batch prediction (imports pandas/scikit-learn)
    monitoring   Prometheus registry, drift windows, labelled-feedback store
    predlog      buffered JSON-lines prediction and feedback logs
    codec        pure: request bodies -> validated feature frames; JSON encoding
    signature    pure: model.json's signature -> feature order, kinds, datatypes
    config, logs settings from flags/env; JSON log lines
"""

from __future__ import annotations

from typing import Final

__version__: Final = "0.1.0"
