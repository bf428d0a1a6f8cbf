"""The typed shapes of `POST /api/segment`: its JSON request body and its JSON answers (OpenAPI documents them)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

FORMATS = ("png", "json", "segments")
Format = Literal["png", "json", "segments"]


class ErrorBody(BaseModel):
    """Every error: one line naming the field and what to do."""
    error: str = Field(..., description="FIELD: what is wrong")
    request_id: str | None = Field(None, description="500 only: the id the server logged the traceback under")


class SegmentJSON(BaseModel):
    """`Content-Type: application/json`: the image as base64, the rest as in the multipart form."""
    image: str = Field(..., description="the image file's bytes, base64 (a data: URL prefix is accepted)")
    model: str | None = Field(None, description="one of GET /api/models' names (default: the server's first)")
    labels: list[str] | None = Field(None, description="LSeg: the labels, one string each (commas allowed)")
    isr: str | None = Field(None, description="ISR setting ENC:DEC from the model's isr_settings")
    format: Format = Field("png", description="png (default, whatever the body) | json | segments")
    include_mask: bool = Field(False, description="json: add the label PNG as base64")


class ClassShare(BaseModel):
    index: int = Field(..., description="the class (or label) index: the label PNG's pixel value")
    name: str
    color: list[int] = Field(..., description="RGB of the class in the label PNG's palette")
    share: float = Field(..., description="fraction of the image's pixels; 0 for a label no pixel took")


class SegmentResult(BaseModel):
    """format=json: what the image holds, and how long each part took."""
    model: str
    width: int
    height: int
    latency_ms: float = Field(..., description="the model's forward pass (its share of a batch)")
    queue_ms: float = Field(..., description="time waiting for the model")
    total_ms: float = Field(..., description="the server's whole handling: decode, queue, model, encode")
    batch_size: int
    isr: str | None
    classes: list[ClassShare] = Field(..., description="every class or label, the largest share first")
    label_png: str | None = Field(None, description="include_mask=true: the palette label PNG, base64")


class Segment(BaseModel):
    label: str
    index: int
    score: float = Field(..., description="mean probability of the label over the pixels it won")
    color: list[int]
    share: float
    mask: str = Field(..., description="a 1-bit PNG of the image's size, white where this label won, base64")


class SegmentsResult(BaseModel):
    """format=segments: one binary mask per label present, as Hugging Face's image-segmentation pipeline gives."""
    model: str
    width: int
    height: int
    latency_ms: float
    total_ms: float
    segments: list[Segment]
