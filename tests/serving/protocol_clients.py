"""Calls a running service with MLflow's and KServe's own client code.

Run by ``test_protocols.py`` with the client environment's interpreter
(``build/protocol-clients-venv``, ``tests/serving/requirements-clients.txt``), never
imported by the project's: ``python protocol_clients.py <base url> <model>`` reads the
rows (a JSON array of objects) on stdin and prints what each client got, as JSON.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any
from urllib.parse import urlsplit


def mlflow_calls(url: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    import pandas as pd
    import requests
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    address = urlsplit(url)
    client = ScoringServerClient(address.hostname, address.port)
    client.wait_server_ready(timeout=30)
    frame = pd.DataFrame(rows)  # missing values are NaN: the client sends NaN tokens
    results: dict[str, Any] = {
        "dataframe": client.invoke(frame)["predictions"],
        "inputs": client.invoke(rows)["predictions"],
    }
    csv = requests.post(
        url + "/invocations",
        data=frame.to_csv(index=False),
        headers={"Content-Type": "text/csv"},
        timeout=30,
    )
    results["csv"] = [csv.status_code, csv.json()]
    try:
        client.invoke([{"island": "Dream"}])
    except Exception as error:  # the client raises a bare Exception with the answer
        results["error"] = str(error)
    return results


async def kserve_calls(url: str, model: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    import httpx
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    results: dict[str, Any] = {}
    v1 = InferenceRESTClient(RESTConfig(protocol="v1"))
    results["v1_live"] = await v1.is_server_live(url)
    results["v1_ready"] = await v1.is_model_ready(url, model)
    results["v1"] = (await v1.infer(url, {"instances": rows}, model_name=model))["predictions"]
    try:
        await v1.infer(url, {"instances": rows}, model_name="elsewhere")
    except httpx.HTTPStatusError as error:
        results["v1_error"] = [error.response.status_code, str(error)]
    await v1.close()

    v2 = InferenceRESTClient(RESTConfig(protocol="v2"))
    results["v2_live"] = await v2.is_server_live(url)
    results["v2_ready"] = await v2.is_server_ready(url)
    results["v2_model_ready"] = await v2.is_model_ready(url, model)
    inputs = []
    for name in rows[0]:
        column = [row[name] for row in rows]
        present = [v for v in column if v is not None]
        datatype = "BYTES" if all(isinstance(v, str) for v in present) else "FP64"
        inputs.append(InferInput(name, [len(rows)], datatype, data=column))
    response = await v2.infer(url, InferRequest(model, inputs, request_id="r-1"), model_name=model)
    results["v2"] = {
        "id": response.id,
        "outputs": {
            output.name: [output.shape, output.as_numpy().tolist()] for output in response.outputs
        },
    }
    bad = [InferInput(inputs[0].name, [1], "FP64", data=[1.5])]
    try:
        await v2.infer(url, InferRequest(model, bad), model_name=model)
    except httpx.HTTPStatusError as error:
        results["v2_error"] = [error.response.status_code, str(error)]
    await v2.close()
    return results


def main() -> None:
    url, model = sys.argv[1], sys.argv[2]
    rows = json.load(sys.stdin)
    results = {"mlflow": mlflow_calls(url, rows), **asyncio.run(kserve_calls(url, model, rows))}
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
