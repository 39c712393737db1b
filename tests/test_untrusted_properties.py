"""Property tests of the parsers and validators of untrusted input: any byte string or value
either loads correctly or raises the one sgtlab error type (SgtlabError), never anything else.

Examples per test: $SGTLAB_HYPOTHESIS_EXAMPLES (default 60, for CI; the slow run uses 2000:
`SGTLAB_HYPOTHESIS_EXAMPLES=2000 pytest tests/test_untrusted_properties.py`). Each test counts the
examples that loaded and those refused; `-s` prints the counts."""
from __future__ import annotations

import gzip
import json
import math
import os
import pickle
import struct
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgtlab.errors import SgtlabError

EXAMPLES = int(os.environ.get("SGTLAB_HYPOTHESIS_EXAMPLES", "60"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=EXAMPLES <= 100,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large])
COUNTS: dict[str, Counter] = {}


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    for name, c in COUNTS.items():
        print(f"\n{name}: {sum(c.values())} examples, {c['ok']} loaded, {c['refused']} refused with SgtlabError")


def outcome(name: str, fn, *args):
    """Run fn; count 'ok' / 'refused'; any other exception fails the test."""
    c = COUNTS.setdefault(name, Counter())
    try:
        value = fn(*args)
    except SgtlabError as e:
        assert str(e) and "\n" not in str(e).strip(), repr(e)
        c["refused"] += 1
        return None
    c["ok"] += 1
    return value


# -- IDX ---------------------------------------------------------------------------------------------

def _idx(dims: list[int], body: bytes, code: int = 8) -> bytes:
    return bytes([0, 0, code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + body


idx_bytes = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda dims, body, code: _idx(dims, body, code), st.lists(st.integers(0, 2**32 - 1), max_size=4),
              st.binary(max_size=200), st.sampled_from([8, 8, 8, 9, 13])),
    st.builds(lambda dims, extra: _idx(dims, bytes(math.prod(dims)) + extra),
              st.lists(st.integers(0, 6), min_size=1, max_size=3), st.sampled_from([b"", b"", b"x"])),
    st.builds(lambda n, w, fill: _idx([n, 28, w], bytes([fill]) * (n * 28 * w)),  # image files, mostly valid
              st.integers(0, 4), st.sampled_from([28, 28, 27]), st.integers(0, 255)),
)


@SETTINGS
@given(idx_bytes)
def test_idx_parser(raw):
    from sgtlab.data.mnist import parse_idx

    arr = outcome("IDX parser", parse_idx, raw, "hypothesis")
    if arr is not None:
        assert arr.dtype == np.uint8 and arr.size == len(raw) - 4 - 4 * raw[3]


@SETTINGS
@given(idx_bytes, st.booleans(), st.integers(1, 11), st.integers(0, 255))
def test_idx_files_through_the_loader(tmp_path_factory, raw, compress, n, label):
    """Gzipped (or not) bytes as the image file of a split, next to a valid label file: the
    loader returns a data set or refuses; labels past the 10 classes are refused."""
    from sgtlab.data.mnist import check_idx_pair, parse_idx, read_idx

    path = tmp_path_factory.mktemp("idx") / "f.gz"
    path.write_bytes(gzip.compress(raw) if compress else raw)

    def load():
        images = read_idx(path)
        labels = parse_idx(_idx([n], bytes([label]) * n), "labels")
        check_idx_pair("mnist", images, labels)
        return images, labels

    got = outcome("IDX files + label check", load)
    if got is not None:
        assert label < 10 and got[0].shape[1:] == (28, 28)


# -- CIFAR-10 batches ---------------------------------------------------------------------------------

plain = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), st.text(max_size=5),
                               st.binary(max_size=5)),
                     lambda kids: st.one_of(st.lists(kids, max_size=4),
                                            st.dictionaries(st.one_of(st.text(max_size=4), st.binary(max_size=4)), kids,
                                                            max_size=4)),
                     max_leaves=12)
arrays = st.builds(lambda n, w, dt, seed: np.random.default_rng(seed).integers(0, 255, (n, w)).astype(dt),
                   st.integers(0, 3), st.sampled_from([3072, 3072, 10]), st.sampled_from(["uint8", "uint8", "float32"]),
                   st.integers(0, 2**16))
batches = st.builds(lambda data, labels, extra: {b"data" if extra else "data": data, "labels": labels},
                    arrays, st.one_of(st.lists(st.integers(-3, 12), max_size=4), plain), st.booleans())
valid_batches = st.builds(lambda n, seed, hi: {"data": np.random.default_rng(seed).integers(0, 256, (n, 3072))
                                               .astype(np.uint8), "labels": [(i * 7 + seed) % hi for i in range(n)]},
                          st.integers(0, 3), st.integers(0, 2**16), st.sampled_from([10, 10, 10, 11]))
cifar_bytes = st.one_of(
    st.builds(lambda obj, proto: pickle.dumps(obj, protocol=proto), valid_batches, st.integers(2, 5)),
    st.binary(max_size=300),
    st.builds(lambda obj, proto: pickle.dumps(obj, protocol=proto), plain, st.integers(2, 5)),
    st.builds(lambda obj, proto: pickle.dumps(obj, protocol=proto), batches, st.integers(2, 5)),
    st.builds(lambda obj, cut: pickle.dumps(obj, protocol=2)[:cut], batches, st.integers(0, 400)),
)


@SETTINGS
@given(cifar_bytes)
def test_cifar_parser(raw):
    from sgtlab.data.cifar import parse_batch, safe_load

    got = outcome("CIFAR-10 batch parser", lambda: parse_batch(safe_load(raw, "hypothesis"), "hypothesis"))
    if got is not None:
        x, y = got
        assert x.dtype == np.uint8 and x.shape[1:] == (3, 32, 32) and len(y) == len(x)
        assert y.dtype == np.int64 and (len(y) == 0 or (y.min() >= 0 and y.max() <= 9))


# -- checkpoint metadata --------------------------------------------------------------------------

def _good_meta() -> dict:
    return {"arch": {"model": "sgt-cnn", "in_channels": 1, "num_classes": 10, "mean": [0.1307], "std": [0.3081],
                     "dataset": "mnist5k"}, "config": {"epochs": 2}, "epoch": 1, "test_accuracy": 0.9}


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), st.text(max_size=6)),
                           lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                  st.dictionaries(st.text(max_size=6), kids, max_size=4)),
                           max_leaves=15)
meta_edits = st.lists(st.tuples(st.sampled_from([("arch", "model"), ("arch", "in_channels"), ("arch", "num_classes"),
                                                 ("arch", "mean"), ("arch", "std"), ("arch", "dataset"), ("arch",),
                                                 ("config",), ("epoch",), ("optimizer",), ("config", "epochs")]),
                                st.one_of(json_values, st.integers(-5, 10**12), st.just("DELETE"))), max_size=3)


def _edited(edits) -> dict:
    meta = _good_meta()
    for path, value in edits:
        node = meta
        for k in path[:-1]:
            node = node.setdefault(k, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            if value == "DELETE":
                node.pop(path[-1], None)
            else:
                node[path[-1]] = value
    return meta


@SETTINGS
@given(st.one_of(json_values, st.builds(_edited, meta_edits)))
def test_checkpoint_metadata_reader(meta):
    from sgtlab.train.checkpoint import check_meta, resume_epoch

    def read():
        m = check_meta(meta, "hypothesis.safetensors")
        if "epoch" in m:
            resume_epoch(m, 5, "hypothesis.safetensors")
        return m

    m = outcome("checkpoint metadata", read)
    if m is not None:
        arch = m["arch"]
        assert 1 <= arch["in_channels"] <= 64 and len(arch["mean"]) == arch["in_channels"]


@settings(SETTINGS, max_examples=max(10, EXAMPLES // 10))
@given(st.one_of(st.text(max_size=200), st.builds(json.dumps, st.builds(_edited, meta_edits))))
def test_checkpoint_files_with_any_metadata(tmp_path_factory, text):
    """A real safetensors file with arbitrary metadata text: read_checkpoint loads or refuses."""
    import torch
    from safetensors.torch import save_file

    from sgtlab.train.checkpoint import read_checkpoint

    path = tmp_path_factory.mktemp("ck") / "checkpoint.safetensors"
    save_file({"model.w": torch.zeros(2)}, str(path), metadata={"sgtlab": text})
    outcome("checkpoint files", read_checkpoint, path)


# -- --set values and preset validation --------------------------------------------------------------

KEYS = ["train.epochs", "train.lr", "train.batch_size", "train.seed", "train.momentum", "seeds", "methods",
        "methods.0", "methods.1.k", "methods.2.train_eps", "methods.5.gamma", "dataset", "model", "name",
        "attack.eps", "attack.attacks", "attack.n", "attack.steps", "attack.checks", "attack.checks.n",
        "explain.methods", "explain.metrics", "explain.n", "explain.qs", "explain.method_options.ig.steps",
        "explain.aopc_steps", "train", "attack", "explain", "train.epochs.x", "methods.x", "nonsense", ""]
VALUES = st.one_of(st.text(max_size=30), st.sampled_from(
    ["1e-3", "1.5", "-1", "0", "1e400", ".nan", ".inf", "[0, 1]", "[]", "{}", "[a]", "null", "true", "abc",
     "[fgsm, nope]", "[grad]", "all", "[0.1, 2]", "{method: st}", "[{method: sgt, k: 0.5}]", "2020-01-01",
     "!!binary aGk=", "&a [*a]", "[1, [2, [3, [4]]]]", "100000000000000000000000", "0x10", "1_000", "~"]))


GOOD = [("train.epochs", "1"), ("train.lr", "1e-3"), ("seeds", "[0]"), ("attack.n", "100"), ("methods.1.k", "0.3"),
        ("explain.methods", "[grad]"), ("attack.eps", "[0.1, 0.2]"), ("train.batch_size", "32"), ("name", "x")]


@SETTINGS
@given(st.lists(st.one_of(st.tuples(st.sampled_from(KEYS), VALUES), st.sampled_from(GOOD)), min_size=1, max_size=3))
def test_set_overrides_and_preset_validation(pairs):
    from sgtlab.experiments.presets import apply_overrides, expand, load_preset

    base = load_preset("quick")
    outcome("--set + preset validation", lambda: expand(apply_overrides(base, [f"{k}={v}" for k, v in pairs])))


SECTION_NAMES = ["dataset", "methods", "seeds", "train", "attack", "explain", "name", "model"]


@SETTINGS
@given(st.one_of(json_values, st.dictionaries(st.sampled_from(SECTION_NAMES), json_values, max_size=6),
                 st.dictionaries(st.sampled_from(SECTION_NAMES), json_values, max_size=1)))
def test_any_preset_value(sections):
    """Any value, or the quick preset with up to one section replaced by any value."""
    from sgtlab.experiments.presets import expand, load_preset

    cfg = {**load_preset("quick"), **sections} if isinstance(sections, dict) and len(sections) <= 1 else sections
    outcome("preset validation (any value)", expand, cfg)


# -- eps grids ------------------------------------------------------------------------------------------

grid_text = st.one_of(
    st.text(max_size=40),
    st.builds(lambda a, b, c: f"{a}:{b}:{c}", *[st.one_of(st.floats(), st.integers(-10, 10**12),
                                                          st.sampled_from(["1e-9", "nan", "inf", "", "x"]))] * 3),
    st.builds(",".join, st.lists(st.one_of(st.floats().map(repr), st.sampled_from(["0.1", "1e9", "-0", "nan"])),
                                 max_size=20)),
)


@SETTINGS
@given(grid_text)
def test_eps_grid_parser(text):
    from sgtlab.evaluate.robustness import check_eps_grid
    from sgtlab.validate import MAX_GRID, parse_grid

    values = outcome("eps grid parser", lambda: check_eps_grid(parse_grid(text)))
    if values is not None:
        assert 1 <= len(values) <= MAX_GRID + 1 and all(math.isfinite(v) and v >= 0 for v in values)
