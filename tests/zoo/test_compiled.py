import keras
import numpy as np

from zoo.compiled import compile_inference


def test_compiled_function_sees_new_weights_and_none_arguments():
    layer = keras.layers.Dense(3, kernel_initializer="ones")
    layer.build((None, 2))

    def apply(x, scale):
        y = layer(x)
        return y if scale is None else y * scale

    compiled = compile_inference(apply, layer.variables)
    x = np.ones((4, 2), "float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(compiled(x, None)), np.full((4, 3), 2.0))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(compiled(x, 0.5)), np.full((4, 3), 1.0))
    # Weights changed between calls (as training does) are used, not baked in.
    layer.kernel.assign(np.zeros((2, 3), "float32"))
    layer.bias.assign(np.full((3,), 7.0, "float32"))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(compiled(x, None)), np.full((4, 3), 7.0))
    assert layer.kernel.numpy().sum() == 0.0  # the call wrote nothing back
