"""FastAPI server for the exported ONNX classifier (no torch at run time)."""
