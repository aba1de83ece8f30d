"""KServe's clients (InferenceRESTClient, V1 and V2, and InferenceGRPCClient) against a running
mlops-server; JSON results on stdout.

Run by test_server_clients.py with the KServe virtualenv's Python (kserve 0.21 pins pandas < 3,
which the development environment does not have, so it cannot be a dev dependency there).

    python kserve_calls.py HTTP_PORT GRPC_PORT MODEL
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig

ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]])


def request(model: str, raw: bool, request_id: str) -> InferRequest:
    """Binary data (raw_input_contents / the binary extension) or typed values (contents / JSON data)."""
    if raw:
        tensor = InferInput("input-0", list(ROWS.shape), "FP64")
        tensor.set_data_from_numpy(ROWS, binary_data=True)
    else:
        tensor = InferInput("input-0", list(ROWS.shape), "FP64", data=ROWS.ravel().tolist())
    return InferRequest(model_name=model, infer_inputs=[tensor], request_id=request_id)


def outputs(response: Any) -> dict[str, Any]:
    by_name = {o.name: o.as_numpy() for o in response.outputs}
    return {
        "id": response.id,
        "predict": by_name["predict"].tolist(),
        "proba_rows": np.round(by_name["predict_proba"].reshape(len(ROWS), -1).sum(axis=1), 9).tolist(),
    }


async def rest_calls(port: int, model: str) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}"
    out: dict[str, Any] = {}
    v1 = InferenceRESTClient(RESTConfig(protocol="v1", timeout=10))
    out["v1_live"] = await v1.is_server_live(base)
    out["v1_model_ready"] = await v1.is_model_ready(base, model)
    answer = await v1.infer(base, {"instances": ROWS.tolist()}, model_name=model)
    out["v1_infer"] = answer["predictions"]
    await v1.close()
    v2 = InferenceRESTClient(RESTConfig(protocol="v2", timeout=10))
    out["live"] = await v2.is_server_live(base)
    out["ready"] = await v2.is_server_ready(base)
    out["model_ready"] = await v2.is_model_ready(base, model)
    out["infer_raw"] = outputs(
        await v2.infer(base, request(model, True, "kserve-rest-raw"), model_name=model)
    )
    out["infer_typed"] = outputs(
        await v2.infer(base, request(model, False, "kserve-rest-typed"), model_name=model)
    )
    await v2.close()
    return out


async def grpc_calls(port: int, model: str) -> dict[str, Any]:
    client = InferenceGRPCClient(f"127.0.0.1:{port}", timeout=10, retries=2)
    out: dict[str, Any] = {
        "live": await client.is_server_live(),
        "ready": await client.is_server_ready(),
        "model_ready": await client.is_model_ready(model),
        "infer_raw": outputs(await client.infer(request(model, True, "kserve-grpc-raw"))),
        "infer_typed": outputs(await client.infer(request(model, False, "kserve-grpc-typed"))),
    }
    try:
        await client.infer(
            InferRequest(model_name="other", infer_inputs=[request(model, True, "x").inputs[0]])
        )
        out["bad_infer"] = "answered"
    except Exception as e:  # grpc.aio.AioRpcError
        out["bad_infer"] = {"status": str(e.code()), "error": e.details()}  # type: ignore[attr-defined]
    await client.close()
    return out


async def main() -> None:
    http_port, grpc_port, model = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    result = {"rest": await rest_calls(http_port, model), "grpc": await grpc_calls(grpc_port, model)}
    json.dump(result, sys.stdout, default=str)


if __name__ == "__main__":
    asyncio.run(main())
