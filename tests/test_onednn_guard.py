"""The oneDNN guard: off only on the CPUs where its kernels corrupted the heap."""

import os
import subprocess
import sys

import pytest

from keras_attention import _onednn

AVX2 = {"fpu", "sse2", "avx", "avx2", "fma"}
AVX512 = AVX2 | {"avx512f", "avx512bw"}
AMX = AVX512 | {"amx_tile", "amx_bf16"}


@pytest.mark.parametrize("flags", [AVX512, AMX, {"avx512f"}])
def test_affected_cpu_turns_onednn_off(flags):
    environ = {}
    assert _onednn.guard(environ, flags=flags, modules={}) == "0"
    assert environ == {"TF_ENABLE_ONEDNN_OPTS": "0"}


@pytest.mark.parametrize("flags", [AVX2, set()])
def test_other_cpus_keep_tensorflow_default(flags):
    environ = {}
    assert _onednn.guard(environ, flags=flags, modules={}) is None
    assert environ == {}


@pytest.mark.parametrize("value", ["0", "1", ""])
def test_user_choice_is_left_alone(value):
    environ = {"TF_ENABLE_ONEDNN_OPTS": value}
    assert _onednn.guard(environ, flags=AMX, modules={}) == value
    assert environ == {"TF_ENABLE_ONEDNN_OPTS": value}


def test_tensorflow_imported_first_on_affected_cpu_warns():
    environ = {}
    with pytest.warns(RuntimeWarning, match="TF_ENABLE_ONEDNN_OPTS=0"):
        assert _onednn.guard(environ, flags=AVX512, modules={"tensorflow": object()}) is None
    assert environ == {}


def test_tensorflow_imported_first_on_safe_cpu_is_silent():
    assert _onednn.guard({}, flags=AVX2, modules={"tensorflow": object()}) is None


def test_cpu_flags_reads_the_first_flags_line(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f\n\n"
                       "processor\t: 1\nflags\t\t: fpu\n")
    assert _onednn.cpu_flags(str(cpuinfo)) == {"fpu", "avx2", "avx512f"}
    assert _onednn.cpu_flags(str(tmp_path / "missing")) == frozenset()


def test_import_applies_the_guard_before_tensorflow_loads():
    """A fresh `import keras_attention` sets the variable exactly when this CPU needs it."""
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    code = ("import os, keras_attention; "
            "print(os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset'))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.split()[-1]
    expected = "0" if _onednn.needs_guard(_onednn.cpu_flags()) else "unset"
    assert out == expected
