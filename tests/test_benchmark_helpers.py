import math

from benchmarks.bench_long_sequences import fitted_exponent
from benchmarks.bench_max_length import short_reason


def test_fitted_exponent_recovers_a_power_law():
    lengths = [4096, 8192, 16384, 32768]
    assert math.isclose(fitted_exponent(lengths, [n**1.5 for n in lengths]), 1.5)
    assert math.isclose(fitted_exponent(lengths, [3.0 * n for n in lengths]), 1.0)


def test_short_reason_keeps_the_buffer_size_of_an_out_of_memory_error():
    message = ("tensorflow.python.framework.errors_impl.ResourceExhaustedError: Out of "
               "memory while trying to allocate 64.09GiB. [Op:__inference_step_387]")
    assert short_reason(message) == "needs a 64.1 GiB buffer"
    assert short_reason("x" * 500) == "x" * 160
