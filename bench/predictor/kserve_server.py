"""The same TorchScript model behind KServe's Python model server (v2 REST).

Usage: kserve_server.py MODEL_DIR PORT
"""

import sys

import kserve
import torch
from kserve import InferOutput, InferRequest, InferResponse


class TorchScriptModel(kserve.Model):
    def __init__(self, name, model_dir):
        super().__init__(name)
        self.model_dir = model_dir
        self.model = None

    def load(self):
        self.model = torch.jit.load(f"{self.model_dir}/model.pt").eval()
        self.ready = True
        return self.ready

    def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        batch = torch.from_numpy(payload.inputs[0].as_numpy()).float()
        with torch.no_grad():
            logits = self.model(batch).numpy()
        output = InferOutput(name="logits", shape=list(logits.shape), datatype="FP32")
        output.set_data_from_numpy(logits, binary_data=False)
        return InferResponse(model_name=self.name, infer_outputs=[output], response_id=payload.id)


if __name__ == "__main__":
    model_dir, port = sys.argv[1], int(sys.argv[2])
    model = TorchScriptModel("model", model_dir)
    model.load()
    kserve.ModelServer(http_port=port, grpc_port=port + 1000, enable_grpc=False, workers=1).start([model])
