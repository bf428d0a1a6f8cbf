"""Hugging Face's image-segmentation inference protocol, as its clients send it, at `POST /hf/{model}` (and
`POST /hf` for the server's first model), so that

    InferenceClient(model="http://127.0.0.1:8000/hf/sanet-effnet-lite0-camvid").image_segmentation("street.jpg")

works as against a hosted endpoint. The request is the image's bytes (with any Content-Type, or none: the image
is identified by its bytes), or JSON `{"inputs": base64 image, "parameters": {...}}`; a URL in `inputs` is
refused (this server fetches nothing). The answer is a bare JSON list of `{"label", "score", "mask"}`, the
mask a base64 PNG of mode L (255 on the label's pixels, 0 elsewhere) at the image's size, as transformers'
`pipeline("image-segmentation")` returns; the masks are disjoint and cover the image (semantic segmentation).

Parameters (in the JSON, or as query parameters with a raw body): `threshold` drops labels whose score is below it; `subtask` may be "semantic" (the only one these
models do); `mask_threshold` and `overlap_mask_area_threshold` concern instance masks and are accepted and
ignored; `labels` (an attnseg extension) gives an LSeg model its labels, as a list or comma-separated.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import time
from functools import partial

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from .routes import APIError, _labels, _served, names_and_palette, observe, run_image, segment_scores
from .schemas import ErrorBody

router = APIRouter()
IGNORED = ("mask_threshold", "overlap_mask_area_threshold")
KNOWN = ("threshold", "subtask", "labels", *IGNORED)

HF_BODY = {"requestBody": {"required": True, "content": {
    **{kind: {"schema": {"type": "string", "format": "binary", "description": "the image's bytes (any or no "
                                                                               "Content-Type)"}}
       for kind in ("application/octet-stream", "image/*")},
    "application/json": {"schema": {"type": "object", "required": ["inputs"], "properties": {
        "inputs": {"type": "string", "description": "the image, base64 (a data: URL too)"},
        "parameters": {"type": "object", "properties": {
            "threshold": {"type": "number", "minimum": 0, "maximum": 1},
            "subtask": {"type": "string", "enum": ["semantic"]},
            "labels": {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "string"}]},
            "mask_threshold": {"type": "number"}, "overlap_mask_area_threshold": {"type": "number"}}}}}}}}}
HF_ANSWER = {200: {"description": "one element per label present", "content": {"application/json": {"schema": {
    "type": "array", "items": {"type": "object", "required": ["label", "score", "mask"], "properties": {
        "label": {"type": "string"}, "score": {"type": "number"},
        "mask": {"type": "string", "description": "base64 PNG, mode L: 255 on the label's pixels"}}}}}}},
    413: {"model": ErrorBody}, 415: {"model": ErrorBody}, 422: {"model": ErrorBody}, 503: {"model": ErrorBody},
    504: {"model": ErrorBody}}


THRESHOLD = Query(None, ge=0.0, le=1.0, description="raw body: the parameters' threshold")
LABELS = Query(None, description="raw body: LSeg labels, the parameter repeated")


@router.post("/hf/{model}", summary="segment one image: Hugging Face's image-segmentation protocol",
             openapi_extra=HF_BODY, responses=HF_ANSWER)
async def hf_segment_model(request: Request, model: str, threshold: float | None = THRESHOLD,
                           labels: list[str] | None = LABELS):
    return await _hf(request, model, {"threshold": threshold, "labels": labels})


@router.post("/hf", summary="the same with the server's first model", openapi_extra=HF_BODY, responses=HF_ANSWER)
async def hf_segment(request: Request, threshold: float | None = THRESHOLD, labels: list[str] | None = LABELS):
    return await _hf(request, None, {"threshold": threshold, "labels": labels})


async def _hf(request: Request, model: str | None, query: dict):
    t0 = time.perf_counter()
    st = request.app.state
    served = _served(st.models, model or next(iter(st.models)))
    try:
        body = await request.body()
    except ClientDisconnect:
        raise APIError(499, "client closed the request") from None
    data, params = _inputs(body, request.headers.get("content-type", ""))
    params = {**{k: v for k, v in query.items() if v is not None}, **params}  # the JSON's parameters win
    threshold = _threshold(params.get("threshold"))
    labels = params.get("labels")
    if labels is not None and not (isinstance(labels, str) or (isinstance(labels, list)
                                                                and all(isinstance(v, str) for v in labels))):
        raise APIError(422, "parameters.labels: expected a list of strings or a comma-separated string")
    label_tuple = _labels(labels, served, st.settings)
    return await run_image(request, served, data, "inputs", label_tuple, None,
                           partial(_answer, request, served, label_tuple, threshold, t0))


def _inputs(body: bytes, content_type: str) -> tuple[bytes, dict]:
    """The image bytes and the parameters, from raw bytes or `{"inputs": ..., "parameters": ...}`."""
    kind = content_type.split(";")[0].strip().lower()
    if kind != "application/json" and not body.lstrip()[:1] == b"{":
        if not body:
            raise APIError(422, "inputs: empty body; send the image's bytes")
        return body, {}
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise APIError(422, "body: not valid JSON; send the image's bytes or {\"inputs\": base64 image}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), str):
        raise APIError(422, "inputs: missing; send {\"inputs\": base64 image, \"parameters\": {...}}")
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise APIError(422, "parameters: expected an object")
    unknown = sorted(set(params) - set(KNOWN))
    if unknown:
        raise APIError(422, f"parameters: unknown {', '.join(map(str, unknown))[:80]}; accepted: {', '.join(KNOWN)}")
    if params.get("subtask") not in (None, "semantic"):
        raise APIError(422, f"parameters.subtask: these models do semantic segmentation only, got "
                            f"{str(params['subtask'])[:20]!r}")
    inputs = doc["inputs"].strip()
    if inputs.startswith(("http://", "https://")):
        raise APIError(422, "inputs: a URL; this server fetches nothing: send the image itself (bytes or base64)")
    if inputs.startswith("data:"):
        inputs = inputs.split(",", 1)[-1]
    try:
        return base64.b64decode(inputs, validate=True), params
    except (binascii.Error, ValueError):
        raise APIError(422, "inputs: not valid base64") from None


def _threshold(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise APIError(422, f"parameters.threshold: expected a number in [0, 1], got {str(value)[:20]}")
    return float(value)


async def _answer(request: Request, served, label_tuple, threshold: float | None, t0: float, result, size):
    names, _ = names_and_palette(served, label_tuple)
    body = await run_in_threadpool(_elements, result, names, threshold)
    _, headers = observe(request, served, result, t0)
    return JSONResponse(body, headers=headers)


def _elements(result, names: list[str], threshold: float | None) -> list[dict]:
    from PIL import Image

    out = []
    for i, score, _ in segment_scores(result, len(names)):
        if threshold is not None and score < threshold:
            continue
        buf = io.BytesIO()
        Image.fromarray((result.label == i).astype("uint8") * 255, mode="L").save(buf, format="PNG")
        out.append({"label": names[i] if i < len(names) else str(i), "score": round(score, 6),
                    "mask": base64.b64encode(buf.getvalue()).decode()})
    return out
