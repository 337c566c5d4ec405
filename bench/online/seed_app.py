"""The seed's online code (FastAPI + uvicorn, the model's own library), as close to the text as it runs:
``/predict`` fetches the user's features from Redis (``redis.asyncio``, one HMGET) and calls
``predict_proba``; ``/infer`` takes all features in the request. Configured by environment variables."""

from __future__ import annotations

import os

import numpy as np
import redis.asyncio as aioredis
import xgboost as xgb
from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI()
model = xgb.XGBClassifier()
model.load_model(os.environ["SEED_MODEL"])
FEATURE_LIST = os.environ["SEED_STORE_FEATURES"].split(",")
REQUEST_FEATURES = ["amount", "merchant_category", "device"]
MODEL_VERSION = "1"
feature_client = aioredis.Redis(port=int(os.environ.get("SEED_REDIS_PORT", "6379")))


class PredictRequest(BaseModel):
    user_id: str
    amount: float
    merchant_category: float
    device: float


class InferRequest(BaseModel):
    features: list[float]


@app.post("/predict")
async def predict(request: PredictRequest) -> dict[str, object]:
    # 1. Fetch features (often the bottleneck - use async)
    values = await feature_client.hmget(f"seed:{request.user_id}", FEATURE_LIST)
    features = {f: float(v) if v is not None else np.nan for f, v in zip(FEATURE_LIST, values, strict=True)}
    # 2. Build feature vector
    x = np.array(
        [[request.amount, request.merchant_category, request.device, *[features[f] for f in FEATURE_LIST]]]
    )
    # 3. Predict
    prediction = model.predict_proba(x)[0][1]
    return {"score": float(prediction), "model_version": MODEL_VERSION}


@app.post("/infer")
async def infer(request: InferRequest) -> dict[str, object]:
    prediction = model.predict_proba(np.array([request.features]))[0][1]
    return {"score": float(prediction), "model_version": MODEL_VERSION}
