"""Running models over images: the RunInference wiring, model files, ONNX sessions."""
