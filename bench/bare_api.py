"""The floor under `api.idle`: the same HTTP stack as the API (uvicorn with httptools and uvloop,
FastAPI, a JSON body read and a JSON answer) and nothing of the cloud: no token, no policy, no
log. `python -m bench.bare_api PORT`; `POST /v2.1/servers` answers 202 with a server's id,
`GET /v2.1/flavors` an empty list. What one request costs on this machine before eventsvm does
anything (idle_bench measures it with the same client and pauses)."""

from __future__ import annotations

import sys
import uuid
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

app = FastAPI()


@app.post("/v2.1/servers", status_code=202)
async def create_server(request: Request) -> JSONResponse:
    body: dict[str, Any] = await request.json()
    return JSONResponse({"server": {"id": str(uuid.uuid4()), "name": body["server"]["name"]}},
                        status_code=202)


@app.get("/v2.1/flavors")
async def list_flavors() -> dict[str, list[Any]]:
    return {"flavors": []}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False,
                lifespan="off", http="httptools", loop="uvloop")
