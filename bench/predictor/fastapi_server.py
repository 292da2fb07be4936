"""The same TorchScript model behind FastAPI + uvicorn + torch, answering
the OIP v2 infer JSON the other servers answer (today's common stack).

Usage: fastapi_server.py MODEL_DIR PORT
"""

import sys

import numpy as np
import torch
import uvicorn
from fastapi import FastAPI, Request

model_dir, port = sys.argv[1], int(sys.argv[2])
model = torch.jit.load(f"{model_dir}/model.pt").eval()
app = FastAPI()


@app.get("/v2/health/ready")
def ready():
    return {"ready": True}


@app.post("/v2/models/{name}/infer")
async def infer(name: str, request: Request):
    body = await request.json()
    tensor = body["inputs"][0]
    batch = torch.from_numpy(np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"]))
    with torch.no_grad():
        logits = model(batch).numpy()
    return {
        "model_name": name,
        "id": body.get("id"),
        "outputs": [{"name": "logits", "shape": list(logits.shape), "datatype": "FP32", "data": logits.ravel().tolist()}],
    }


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
