"""Model directories: export with optimum-onnx, manifests, the default model, the registry."""
