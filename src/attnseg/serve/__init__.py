"""`attnseg serve`: a web page and an HTTP API over loaded models (FastAPI app in app.py, micro-batching
inference worker in batcher.py, the page in static/)."""
