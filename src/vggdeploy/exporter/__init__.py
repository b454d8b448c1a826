"""From PyTorch to deployable files: ONNX export, FP16 conversion and TensorRT engine builds."""
