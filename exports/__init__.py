"""What leaves PyTorch: ONNX export with verification and metadata, ONNX Runtime quantization."""
