"""Every call tritonclient (http and grpc) offers, against a running mlops-server; JSON results on stdout.

Run in its own process by test_server_clients.py: tritonclient.grpc registers the upstream
`inference` protobuf messages, which the test process already has from mlops_server.proto under
the same names (protobuf's default pool takes each name once), and tritonclient.http brings gevent.

    python triton_calls.py HTTP_PORT GRPC_PORT MODEL
"""

from __future__ import annotations

import json
import queue
import sys
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]])


def attempt(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """The call's result, or {"error": ...} for a refusal (a clean InferenceServerException)."""
    try:
        return fn(*args, **kwargs)
    except InferenceServerException as e:
        return {"error": e.message(), "status": e.status()}


def refused(client: Any, model: str) -> dict[str, Any]:
    """Calls for what one served model has no use for: each must be refused cleanly."""
    return {
        "load_model": attempt(client.load_model, model),
        "unload_model": attempt(client.unload_model, model),
        "get_trace_settings": attempt(client.get_trace_settings),
        "update_trace_settings": attempt(client.update_trace_settings, settings={"trace_rate": "1"}),
        "get_log_settings": attempt(client.get_log_settings),
        "update_log_settings": attempt(client.update_log_settings, {"log_verbose_level": 1}),
        "system_shared_memory_status": attempt(client.get_system_shared_memory_status),
        "register_system_shared_memory": attempt(client.register_system_shared_memory, "r", "/k", 8),
        "unregister_system_shared_memory": attempt(client.unregister_system_shared_memory),
        "cuda_shared_memory_status": attempt(client.get_cuda_shared_memory_status),
        "register_cuda_shared_memory": attempt(client.register_cuda_shared_memory, "r", b"\0" * 64, 0, 8),
        "unregister_cuda_shared_memory": attempt(client.unregister_cuda_shared_memory),
    }


def http_calls(port: int, model: str) -> dict[str, Any]:
    client = httpclient.InferenceServerClient(f"127.0.0.1:{port}", connection_timeout=10, network_timeout=10)
    out: dict[str, Any] = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(model),
        "other_model_ready": client.is_model_ready("other"),
        "server_metadata": client.get_server_metadata(),
        "model_metadata": client.get_model_metadata(model),
        "model_config": client.get_model_config(model),
        "repository_index": client.get_model_repository_index(),
    }
    for binary in (True, False):
        inp = httpclient.InferInput("input-0", list(ROWS.shape), "FP64")
        inp.set_data_from_numpy(ROWS, binary_data=binary)
        outputs = [
            httpclient.InferRequestedOutput("predict", binary_data=binary),
            httpclient.InferRequestedOutput("predict_proba", binary_data=binary),
        ]
        result = client.infer(model, [inp], outputs=outputs, request_id=f"http-{binary}")
        out[f"infer_binary_{binary}"] = {
            "id": result.get_response()["id"],
            "predict": result.as_numpy("predict").tolist(),
            "proba_rows": np.round(result.as_numpy("predict_proba").sum(axis=1), 9).tolist(),
        }
    inp = httpclient.InferInput("input-0", list(ROWS.shape), "FP32")
    inp.set_data_from_numpy(ROWS.astype(np.float32))
    out["async_infer"] = client.async_infer(model, [inp]).get_result().as_numpy("predict").tolist()
    out["bad_infer"] = attempt(client.infer, "other", [inp])
    out["statistics"] = client.get_inference_statistics(model)
    out["refused"] = refused(client, model)
    out["live_after"] = client.is_server_live()
    client.close()
    return out


def grpc_calls(port: int, model: str) -> dict[str, Any]:
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
    out: dict[str, Any] = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(model),
        "other_model_ready": attempt(client.is_model_ready, "other"),
        "server_metadata": client.get_server_metadata(as_json=True),
        "model_metadata": client.get_model_metadata(model, as_json=True),
        "model_config": client.get_model_config(model, as_json=True),
        "repository_index": client.get_model_repository_index(as_json=True),
    }
    for datatype in ("FP64", "FP32"):
        inp = grpcclient.InferInput("input-0", list(ROWS.shape), datatype)
        inp.set_data_from_numpy(ROWS.astype(np.float64 if datatype == "FP64" else np.float32))
        result = client.infer(
            model,
            [inp],
            outputs=[
                grpcclient.InferRequestedOutput("predict"),
                grpcclient.InferRequestedOutput("predict_proba"),
            ],
            request_id=f"grpc-{datatype}",
            client_timeout=10,
        )
        out[f"infer_{datatype}"] = {
            "id": result.get_response().id,
            "predict": result.as_numpy("predict").tolist(),
            "proba_rows": np.round(result.as_numpy("predict_proba").sum(axis=1), 9).tolist(),
        }
    done: queue.Queue[Any] = queue.Queue()
    client.async_infer(model, [inp], callback=lambda result, error: done.put((result, error)))
    result, error = done.get(timeout=10)
    out["async_infer"] = {"error": str(error)} if error else result.as_numpy("predict").tolist()
    out["bad_infer"] = attempt(client.infer, "other", [inp])
    out["statistics"] = client.get_inference_statistics(model, as_json=True)
    # The stream RPC is not served: the callback gets UNIMPLEMENTED.
    streamed: queue.Queue[Any] = queue.Queue()
    client.start_stream(callback=lambda result, error: streamed.put((result, error)))
    attempt(client.async_stream_infer, model, [inp])  # refused at once when the stream already failed
    result, error = streamed.get(timeout=10)
    client.stop_stream()
    out["refused"] = {
        "stream_infer": {"error": error.message(), "status": error.status()} if error else "answered",
        **refused(client, model),
    }
    out["live_after"] = client.is_server_live()
    client.close()
    return out


def main() -> None:
    http_port, grpc_port, model = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    json.dump(
        {"http": http_calls(http_port, model), "grpc": grpc_calls(grpc_port, model)}, sys.stdout, default=str
    )


if __name__ == "__main__":
    main()
