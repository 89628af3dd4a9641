"""Video I/O: probing and ingest of raw sources (PyAV), H.264 encoding, and frame decoding (decord, PyAV)."""
