"""What the server needs at run time, and nothing heavier.

Every module in this package imports neither torch nor transformers: the
server image installs only ONNX Runtime, tokenizers and NumPy, and the export
step checks its model with the same code.
`tests/unit/distrinews/runtime/test_torch_free.py` proves the contract by
importing the server in a fresh interpreter.
"""
