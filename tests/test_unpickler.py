"""The CIFAR-10 unpickler runs no pickled code: every global outside the few a numpy array needs is
refused (numpy, torch and sgtlab ones included), and so is every persistent id.

Each hostile pickle below would, under a trusting unpickler, call its global; the harmful ones
would create a marker file, which must not exist afterwards.
"""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from sgtlab.data.cifar import parse_batch, safe_load
from sgtlab.errors import DataError


def _call(module: str, name: str, *args) -> bytes:
    """A protocol-2 pickle of `module.name(*args)` (GLOBAL, then REDUCE on a tuple of strings and
    empty dicts)."""
    body = b"".join(b"}" if a == {} else b"X" + len(a.encode()).to_bytes(4, "little") + a.encode() for a in args)
    return b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"(" + body + b"tR."


def _touch_code(path) -> str:
    return f"open({str(path)!r}, 'w').close()"


HOSTILE = [
    ("builtins", "exec"), ("builtins", "eval"), ("os", "system"), ("subprocess", "getoutput"),
    ("numpy.testing._private.utils", "runstring"),  # a numpy global that calls exec
    ("numpy", "load"), ("numpy.lib.npyio", "load"), ("numpy", "frombuffer"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"), ("numpy.ma.core", "_mareconstruct"),
    ("torch", "load"), ("torch.serialization", "load"), ("torch._utils", "_rebuild_tensor_v2"),
    ("torch.storage", "_load_from_bytes"),
    ("sgtlab.io", "write_text_atomic"), ("sgtlab.data.cifar", "load_cifar10"), ("sgtlab.data.cifar", "SafeUnpickler"),
]


@pytest.mark.parametrize("module,name", HOSTILE, ids=[f"{m}.{n}" for m, n in HOSTILE])
def test_hostile_globals_are_refused(tmp_path, module, name):
    marker = tmp_path / "ran"
    raw = _call(module, name, _touch_code(marker), *([{}] if name == "runstring" else []))
    with pytest.raises(DataError, match=rf"refused global {module}\.{name}.*nothing was executed"):
        safe_load(raw, "batch")
    assert not marker.exists()


def test_a_global_nested_in_a_batch_is_refused(tmp_path):
    marker = tmp_path / "ran"
    inner = _call("numpy.testing._private.utils", "runstring", _touch_code(marker), {})[2:-1]  # no header/STOP
    raw = b"\x80\x02}(X\x04\x00\x00\x00data" + inner + b"u."
    with pytest.raises(DataError, match="refused global"):
        safe_load(raw, "batch")
    assert not marker.exists()


@pytest.mark.parametrize("raw", [b"\x80\x02X\x03\x00\x00\x00pidQ.", b"Pfoo\n."], ids=["BINPERSID", "PERSID"])
def test_persistent_ids_are_refused(raw):
    with pytest.raises(DataError, match="refused persistent id"):
        safe_load(raw, "batch")


@pytest.mark.parametrize("protocol", [3, 4])
def test_a_real_numpy_batch_loads(protocol):
    rng = np.random.default_rng(0)
    batch = {b"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8), b"labels": [0, 9, 4],
             b"batch_label": b"x"}
    obj = safe_load(pickle.dumps(batch, protocol=protocol), "batch")
    x, y = parse_batch(obj, "batch")
    assert np.array_equal(x.reshape(3, -1), batch[b"data"]) and y.tolist() == [0, 9, 4]


def test_the_numpy_1_spelling_of_reconstruct_loads():
    """The official files were written by numpy 1.x: `numpy.core.multiarray._reconstruct`."""
    raw = pickle.dumps(np.arange(6, dtype=np.uint8), protocol=3)  # GLOBAL opcodes: module names as text
    raw = raw.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    assert b"cnumpy.core.multiarray\n_reconstruct" in raw
    assert np.array_equal(safe_load(raw, "batch"), np.arange(6, dtype=np.uint8))


def test_python_2_byte_strings_come_back_as_latin1_text():
    """The official batches are Python 2 pickles: their 8-bit strings (keys, pixel buffers) are
    SHORT_BINSTRINGs, read as latin-1 so that every byte value 0..255 survives."""
    raw = b"\x80\x02}q\x00(U\x04dataq\x01U\x03\x00\x80\xffq\x02U\x06labelsq\x03]q\x04K\x07au."
    assert safe_load(raw, "batch") == {"data": "\x00\x80\xff", "labels": [7]}


@pytest.mark.parametrize("data", [np.zeros((2, 3072, 1), np.uint8), np.zeros((2, 3072), np.float64),
                                  np.zeros((2, 3073), np.uint8)], ids=["3-D", "float", "3073"])
def test_batch_data_must_be_an_n_by_3072_uint8_matrix(data):
    with pytest.raises(DataError, match="uint8 array of N x 3072"):
        parse_batch({b"data": data, b"labels": [0, 1]}, "batch")
