"""vggdeploy: the VGG family from PyTorch to checked ONNX, INT8/FP16 and TensorRT engines.

Importing the package is cheap on purpose: torch, onnxruntime and tensorrt are imported only
by the modules that need them, so `vggdeploy --help` starts fast on any machine.
"""

__version__ = "0.1.0"
