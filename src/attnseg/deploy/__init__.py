"""Running a trained model outside eager PyTorch: ONNX export (`export`), int8 graphs (`quantize`) and the
runtimes behind one interface (`backends`: onnxruntime, OpenVINO)."""
