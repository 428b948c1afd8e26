"""Rewrite the converter's int8 output layer into the shape tflite_runtime runs fast.

The converter emits the output layer as FULLY_CONNECTED(input = activations ``[1, H]``,
filter = kernel ``[C, H]``): one row against ``C`` output channels. tflite_runtime 2.14's
x86 wheel runs that shape (a GEMV) on a slow kernel, about 4-5 ns per multiply-add, so a
151-class output layer cost ~150 µs of a ~250 µs invoke. The same product with the
operands swapped, FULLY_CONNECTED(input = kernel ``[C, H]``, filter = activations
``[1, H]``) -> ``[C, 1]``, is ``C`` rows against one channel, the shape the sparse first
layer already uses, and runs several times faster. The converter always puts the constant
in the filter, so the swap is done here on the flatbuffer.

The swapped form has one output channel and no per-class bias: the export folds the bias
into the kernel (:func:`convert.quantize.to_tflite`), so the product is followed only by a
RESHAPE to ``[1, C]``, and asks the converter for one scale for the kernel, which is now an
activation-like input. A FULLY_CONNECTED with a bias, a fused activation or a per-channel
kernel is left as it is.
"""

from __future__ import annotations

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils

Op = schema.BuiltinOperator


def swap_output_layer(content: bytes, logits: tuple[float, float] | None = None) -> bytes:
    """``content`` with every int8 FULLY_CONNECTED of one input row against a constant
    kernel of several channels, without a bias, rewritten as the swapped product +
    RESHAPE; anything else is left as it is. ``logits``, a ``(low, high)`` range, replaces
    the range the converter calibrated for the product's output."""
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    rewritten = False
    for graph in model.subgraphs:
        position = 0
        while position < len(graph.operators):
            replacement = _swapped(model, graph, graph.operators[position], logits)
            if replacement:
                graph.operators[position : position + 1] = replacement
                position += len(replacement)
                rewritten = True
            else:
                position += 1
    if not rewritten:
        return content
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _swapped(
    model: schema.ModelT,
    graph: schema.SubGraphT,
    op: schema.OperatorT,
    logits: tuple[float, float] | None,
) -> list[schema.OperatorT]:
    """The two operators replacing ``op``, or ``[]`` when ``op`` is not the slow shape."""
    if _opcode(model, op) != Op.FULLY_CONNECTED or len(op.inputs) < 2:
        return []
    activations, kernel = (graph.tensors[i] for i in op.inputs[:2])
    output = graph.tensors[op.outputs[0]]
    if (
        (len(op.inputs) > 2 and op.inputs[2] >= 0)
        or kernel.type != schema.TensorType.INT8
        or len(kernel.quantization.scale) != 1
        or _data(model, kernel) is None
        or list(activations.shape) != [1, kernel.shape[1]]
        or kernel.shape[0] < 2
        or list(output.shape) != [1, kernel.shape[0]]
    ):
        return []
    classes = int(kernel.shape[0])
    options = op.builtinOptions
    if options is not None and options.fusedActivationFunction:
        return []
    # The kernel becomes an input, which has one scale: the export asks the converter for
    # per-tensor weights (a per-channel kernel is left alone above).
    kernel.quantization.quantizedDimension = 0

    if logits is not None:
        low, high = logits
        step = (high - low) / 255
        output.quantization.scale = np.array([step], np.float32)
        output.quantization.zeroPoint = np.array([round(-128 - low / step)], np.int64)
    scale, zero = float(output.quantization.scale[0]), int(output.quantization.zeroPoint[0])
    column = _tensor(model, graph, "logits_column", [classes, 1], scale, zero)
    shape = _tensor(model, graph, "logits_shape", [2], None, None)
    _set(model, graph.tensors[shape], np.array([1, classes], np.int32))

    swapped = schema.OperatorT()
    swapped.opcodeIndex = op.opcodeIndex
    swapped.inputs = np.array([op.inputs[1], op.inputs[0], -1], np.int32)
    swapped.outputs = np.array([column], np.int32)
    swapped.builtinOptionsType = schema.BuiltinOptions.FullyConnectedOptions
    swapped.builtinOptions = schema.FullyConnectedOptionsT()

    reshape = schema.OperatorT()
    reshape.opcodeIndex = _opcode_index(model, Op.RESHAPE)
    reshape.inputs = np.array([column, shape], np.int32)
    reshape.outputs = np.array([op.outputs[0]], np.int32)
    reshape.builtinOptionsType = schema.BuiltinOptions.ReshapeOptions
    reshape.builtinOptions = schema.ReshapeOptionsT()
    reshape.builtinOptions.newShape = [1, classes]
    return [swapped, reshape]


def _builtin(code: schema.OperatorCodeT) -> int:
    # Builtin codes above 127 live only in the newer field; the older one saturates.
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def _opcode(model: schema.ModelT, op: schema.OperatorT) -> int:
    return _builtin(model.operatorCodes[op.opcodeIndex])


def _opcode_index(model: schema.ModelT, builtin: int) -> int:
    for index, code in enumerate(model.operatorCodes):
        if _builtin(code) == builtin:
            return index
    code = schema.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, 127)
    code.version = 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _data(model: schema.ModelT, tensor: schema.TensorT) -> np.ndarray | None:
    data = model.buffers[tensor.buffer].data
    return None if data is None else np.asarray(data, np.uint8)


def _set(model: schema.ModelT, tensor: schema.TensorT, values: np.ndarray) -> None:
    """Store ``values`` in ``tensor``'s buffer."""
    model.buffers[tensor.buffer].data = np.frombuffer(values.tobytes(), np.uint8)


def _tensor(
    model: schema.ModelT,
    graph: schema.SubGraphT,
    name: str,
    shape: list[int],
    scale: float | None,
    zero: int | None,
) -> int:
    """A new tensor with a buffer of its own: int8 with a quantization, else int32."""
    tensor = schema.TensorT()
    tensor.name = name.encode()
    tensor.shape = np.array(shape, np.int32)
    tensor.type = schema.TensorType.INT8 if scale is not None else schema.TensorType.INT32
    if scale is not None:
        tensor.quantization = schema.QuantizationParametersT()
        tensor.quantization.scale = np.array([scale], np.float32)
        tensor.quantization.zeroPoint = np.array([zero], np.int64)
    model.buffers.append(schema.BufferT())
    tensor.buffer = len(model.buffers) - 1
    graph.tensors.append(tensor)
    return len(graph.tensors) - 1
