#!/usr/bin/env python3
"""Writes the demo's broken model: a working TorchScript model wrapped so that
it raises on every real input.

  broken_model.py BASE_MODEL_PT BASE_MODEL_JSON OUT_DIR

The wrapper answers all-zero inputs (what `hone-predictor verify` runs) through
the base model, so the ModelVersion passes verification, and raises on any
other input, so every live request it gets is an HTTP 500: a model that looks
fine to a smoke test and breaks in production. Its model.json is the base
model's card with the new artifact digest; the demo registers it with the
base model's metrics, so the InferenceService's `track` picks it up and rolls
it out as a canary, which the live analysis must then abort.
"""
import hashlib
import json
import os
import sys

import torch


class Broken(torch.nn.Module):
    def __init__(self, base):
        super().__init__()
        self.base = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(torch.any(x != 0)):
            raise RuntimeError("this model was exported broken on purpose (hone demo): it fails on real input")
        return self.base(x)


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    base_pt, base_json, out = sys.argv[1:]
    base = torch.jit.load(base_pt, map_location="cpu")
    module = torch.jit.script(Broken(base))
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "model.pt")
    torch.jit.save(module, path)
    with open(path, "rb") as f:
        digest = "sha256:" + hashlib.sha256(f.read()).hexdigest()
    with open(base_json) as f:
        card = json.load(f)
    card["artifactDigest"] = digest
    with open(os.path.join(out, "model.json"), "w") as f:
        json.dump(card, f, indent=2)
    # Check both behaviours before anything is uploaded.
    shape = [1] + list(card["signature"]["inputShape"])
    module.eval()
    with torch.no_grad():
        module(torch.zeros(shape))
        try:
            module(torch.ones(shape))
        except Exception:  # noqa: BLE001 - TorchScript raises torch.jit.Error
            pass
        else:
            sys.exit("the broken model answered a real input")
    print(digest)


if __name__ == "__main__":
    main()
