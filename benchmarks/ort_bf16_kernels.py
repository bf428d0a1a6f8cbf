"""Does onnxruntime's CPU provider run bf16? Builds one-node bf16 graphs of the ops our models spend their
time in and reports, per op, whether a session can be created.

    python benchmarks/ort_bf16_kernels.py
"""
from __future__ import annotations

import onnxruntime as ort
from onnx import TensorProto, helper

BF16 = TensorProto.BFLOAT16
CASES = {  # op: (input shapes, attributes)
    "MatMul": ([[4, 8], [8, 4]], {}),
    "Gemm": ([[4, 8], [8, 4]], {}),
    "Conv": ([[1, 4, 8, 8], [4, 4, 3, 3]], {}),
    "Add": ([[4, 4], [4, 4]], {}),
    "Mul": ([[4, 4], [4, 4]], {}),
    "Softmax": ([[4, 4]], {}),
    "LayerNormalization": ([[4, 4], [4], [4]], {}),
    "Relu": ([[4, 4]], {}),
}


def check(op: str, shapes: list[list[int]], attrs: dict) -> str:
    names = [f"i{k}" for k in range(len(shapes))]
    inputs = [helper.make_tensor_value_info(n, BF16, s) for n, s in zip(names, shapes)]
    graph = helper.make_graph([helper.make_node(op, names, ["y"], **attrs)], op, inputs,
                              [helper.make_tensor_value_info("y", BF16, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    try:
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return "runs"
    except Exception as e:  # noqa: BLE001 (onnxruntime raises its own exception types)
        return str(e).splitlines()[0].split(" : ")[-1][:90]


if __name__ == "__main__":
    print(f"onnxruntime {ort.__version__}, CPUExecutionProvider, bf16 inputs and output:")
    for op, case in CASES.items():
        print(f"  {op:<20} {check(op, *case)}")
