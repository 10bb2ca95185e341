"""`trm serve`: a web page and a JSON API in front of the inference engine (`trm.serve.app`), with one
background worker that batches concurrent requests into the engine's pool (`trm.serve.batching`).

Needs the `serve` extra (FastAPI, uvicorn): `pip install 'trm[serve]'`. Nothing is imported here, so the rest
of trm never needs it.
"""
