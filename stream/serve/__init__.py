"""``learnstream serve``: the live global model over HTTP (Starlette on uvicorn)."""
