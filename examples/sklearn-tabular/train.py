#!/usr/bin/env python3
"""A scikit-learn trainer that honours Hone's training contract: the tabular
reference system, StandardScaler + LogisticRegression, on a CSV Dataset,
exported to ONNX with skl2onnx.

No Hone code (hone_contract.py, beside it in the image, is plain Python that
reads and writes the contract). It reads the HONE_* variables a TrainingJob
pod receives, holds out Hone's own seeded split (the test samples the
ModelVersion is later evaluated on), fits the pipeline on the training
split, and writes under HONE_OUTPUT:
  model.onnx   the whole pipeline (scaling included), input "input"
               [batch, features] float32; outputs "label" (int64) and
               "probabilities" [batch, classes] (zipmap off: a tensor)
  model.json   the card: signature.output "probabilities" (the predictor
               uses them as they are), no preprocessing (the scaler is in the
               graph), trainingStats of the raw features for drift
and the termination summary (artifactFormat ONNX) at HONE_TERMINATION_LOG.

Knobs (spec.env): SKLEARN_C (inverse regularisation, default 1.0),
SKLEARN_MAX_ITER (default 1000).

Run it locally:
    HONE_DATASET_SOURCE=data/wine.csv HONE_OUTPUT=/tmp/out python train.py
"""
import json
import os
import sys
import time

import numpy as np
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

# hone_contract.py: beside this script in the image, in ../common in the repository.
sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from hone_contract import (  # noqa: E402
    MODEL_CARD_FILE, MODEL_CARD_VERSION, ONNX_MODEL_FILE, ContractError, check_digest, env, env_float, env_int,
    fail, finish, output_location, read_csv, sha256_file,
)

# ONNX opsets ONNX Runtime 1.31 (the predictor's) runs.
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}


def feature_stats(name, values):
    """The card's reference distribution of one raw feature (trainingStats):
    deciles as bin edges, the share in each bin, a sorted subsample."""
    values = np.sort(values.astype(np.float64))
    edges = sorted({round(float(e), 6) for e in np.quantile(values, np.linspace(0, 1, 11)[1:-1])})
    bins = np.searchsorted(np.asarray(edges), values, side="right")
    fractions = [float((bins == i).sum()) / len(values) for i in range(len(edges) + 1)]
    index = np.round(np.linspace(0, len(values) - 1, min(256, len(values)))).astype(int)
    return {"name": name, "mean": float(values.mean()), "std": float(values.std()), "min": float(values[0]),
            "max": float(values[-1]), "binEdges": edges, "binFractions": fractions,
            "reference": [float(v) for v in values[index]]}


def fit(table):
    """The pipeline fitted on Hone's training split, and its figures on each split."""
    inputs = np.asarray(table["values"], dtype=np.float32)
    labels = np.asarray(table["labels"])
    split = {name: np.asarray(indices, dtype=int) for name, indices in table["split"].items()}
    if len(split["train"]) == 0 or len(set(labels[split["train"]])) < 2:
        raise ContractError("InvalidData", "the training split needs samples of at least two classes")
    pipeline = Pipeline([
        ("scale", StandardScaler()),
        ("classify", LogisticRegression(C=env_float("SKLEARN_C", 1.0), max_iter=env_int("SKLEARN_MAX_ITER", 1000))),
    ])
    started = time.time()
    pipeline.fit(inputs[split["train"]], labels[split["train"]])
    metrics = {}
    for name in ("train", "val", "test"):
        if len(split[name]):
            metrics[f"{name}_accuracy"] = round(float(pipeline.score(inputs[split[name]], labels[split[name]])), 6)
    metrics["fit_seconds"] = round(time.time() - started, 3)
    print(json.dumps({"event": "fitted", "metrics": metrics}), flush=True)
    return pipeline, inputs, split, metrics


def export(pipeline, inputs, split, metrics, table, out, output_uri):
    """model.onnx and model.json; returns the training summary."""
    features = inputs.shape[1]
    onnx_model = convert_sklearn(
        pipeline, initial_types=[("input", FloatTensorType([None, features]))],
        options={id(pipeline.named_steps["classify"]): {"zipmap": False}}, target_opset=TARGET_OPSET)
    model_path = os.path.join(out, ONNX_MODEL_FILE)
    with open(model_path, "wb") as f:
        f.write(onnx_model.SerializeToString())
    artifact_digest, artifact_size = sha256_file(model_path)
    # The pipeline's classes are the sorted labels: the same order as Hone's.
    classes = [str(c) for c in pipeline.classes_]
    if classes != table["classes"]:
        raise ContractError("InvalidData", f"classes {classes} differ from the Dataset's {table['classes']}")
    train = inputs[split["train"]]
    card = {
        "formatVersion": MODEL_CARD_VERSION,
        "input": "tabular",
        "signature": {"inputShape": [features], "classes": classes, "output": "probabilities"},
        "featureNames": table["feature_names"],
        "architecture": "sklearn-standardscaler-logisticregression",
        "metrics": metrics,
        "datasetDigest": table["digest"],
        "artifactDigest": artifact_digest,
        "trainingStats": {"samples": len(train),
                          "features": [feature_stats(n, train[:, i]) for i, n in enumerate(table["feature_names"])]},
    }
    card_path = os.path.join(out, MODEL_CARD_FILE)
    with open(card_path, "w") as f:
        json.dump(card, f, indent=2)
    card_digest, _ = sha256_file(card_path)
    return {
        "kind": "train",
        "epoch": 1,
        "totalEpochs": 1,
        "metrics": metrics,
        "artifactUri": output_uri.rstrip("/") + "/" + ONNX_MODEL_FILE,
        "artifactFormat": "ONNX",
        "artifactDigest": artifact_digest,
        "artifactSizeBytes": artifact_size,
        "cardDigest": card_digest,
        "datasetDigest": table["digest"],
        "inputShape": [features],
        "classes": classes,
        "output": "probabilities",
    }


def main():
    try:
        output_uri, out, scratch = output_location("sklearn-")
        source = env("HONE_DATASET_SOURCE")
        if not source:
            raise ContractError("InvalidSpec", "HONE_DATASET_SOURCE is not set")
        if env("HONE_DATASET_FORMAT", "CSV") != "CSV":
            raise ContractError("InvalidSpec", "this example trains on CSV Datasets (Dataset spec.format: CSV)")
        try:
            table = read_csv(source, os.path.join(scratch, "dataset"))
        except OSError as e:
            raise ContractError("Storage", f"reading {source}: {e}") from e
        check_digest(table["digest"])
        pipeline, inputs, split, metrics = fit(table)
        finish(export(pipeline, inputs, split, metrics, table, out, output_uri), out, output_uri)
        return 0
    except Exception as e:  # every failure ends as an error summary
        return fail(e)


if __name__ == "__main__":
    sys.exit(main())
