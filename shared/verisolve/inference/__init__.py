"""ONNX Runtime inference: the sampling engine, verifier scoring, tokenizers and providers."""
