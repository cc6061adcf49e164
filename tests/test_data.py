"""Batches, streamed (out-of-core) data, and memory bounds."""

import tracemalloc

import numpy as np
import pytest

import sklearn_hsae._data as data_module
from sklearn_hsae import HierarchicalSparseAutoencoder, SparseAutoencoder
from sklearn_hsae._data import is_streamed, iter_batches
from sklearn_hsae.datasets import make_hierarchical_activations


class SliceOnly:
    """A minimal store (think h5py / zarr): shape, dtype and contiguous slicing only."""

    def __init__(self, array):
        self._array = array
        self.shape = array.shape
        self.dtype = array.dtype
        self.reads = []

    def __getitem__(self, key):
        if not isinstance(key, slice):
            raise TypeError(f"only slices are supported, got {type(key).__name__}")
        self.reads.append((key.start, key.stop))
        return self._array[key].copy()


@pytest.fixture
def memmap(tmp_path):
    X, *_ = make_hierarchical_activations(n_samples=120_000, n_features=64, random_state=0)
    path = tmp_path / "acts.f32"
    mm = np.memmap(path, dtype=np.float32, mode="w+", shape=X.shape)
    mm[:] = X
    mm.flush()
    return np.memmap(path, dtype=np.float32, mode="r", shape=X.shape)


def test_what_counts_as_streamed(memmap):
    assert is_streamed(memmap) and is_streamed(SliceOnly(np.zeros((3, 2))))
    assert not is_streamed(np.zeros((3, 2))) and not is_streamed([[1.0, 2.0]])


@pytest.mark.parametrize("streamed", [False, True])
def test_an_epoch_visits_every_row_once(streamed, monkeypatch):
    monkeypatch.setattr(data_module, "_SHUFFLE_BUFFER_BYTES", 64 * 8 * 100)  # 100-row buffers
    X = np.arange(1003 * 8, dtype=np.float64).reshape(1003, 8)
    source = SliceOnly(X) if streamed else X
    batches = list(iter_batches(source, 64, np.random.RandomState(0)))
    assert [len(b) for b in batches[:-1]] == [64] * (len(batches) - 1) and len(batches) == 16
    seen = np.concatenate(batches)[:, 0] // 8
    np.testing.assert_array_equal(np.sort(seen), np.arange(1003))
    assert not np.array_equal(seen, np.arange(1003))  # shuffled
    again = np.concatenate(list(iter_batches(source, 64, np.random.RandomState(0))))
    np.testing.assert_array_equal(again[:, 0] // 8, seen)  # reproducible


def test_fit_on_a_memmap_never_copies_it_whole(memmap, monkeypatch):
    monkeypatch.setattr(data_module, "_SHUFFLE_BUFFER_BYTES", 2 * 2**20)  # 2 MB, X is 31 MB
    monkeypatch.setattr(data_module, "_CHECK_BLOCK_BYTES", 2**20)
    est = SparseAutoencoder(n_components=32, k=3, max_iter=2, batch_size=512, random_state=0)
    # A first fit imports ~60 MB of modules lazily (torch._dynamo, sympy): not data.
    SparseAutoencoder(n_components=4, k=1, max_iter=1).fit(np.asarray(memmap[:64])).score(memmap[:64])
    tracemalloc.start()
    est.fit(memmap)
    Z = est.transform(memmap)
    score = est.score(memmap)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < memmap.nbytes / 2, (peak, memmap.nbytes)  # numpy reports to tracemalloc
    assert Z.shape == (120_000, 32) and score > 0.3
    in_memory = np.asarray(memmap)
    np.testing.assert_array_equal(Z.toarray(), est.transform(in_memory).toarray())
    assert score == pytest.approx(est.score(in_memory), rel=1e-6)


def test_slice_only_stores_and_float16_caches(memmap):
    store = SliceOnly(np.asarray(memmap[:5000]).astype(np.float16))
    est = HierarchicalSparseAutoencoder(n_parents=24, n_children=4, subspace_dim=3, k=3,
                                        max_iter=2, batch_size=256, random_state=0).fit(store)
    assert all(isinstance(r, tuple) for r in store.reads)  # never a fancy index
    Z = est.transform(store)
    assert Z.dtype == np.float64  # float16 is widened, as scikit-learn would
    twin = HierarchicalSparseAutoencoder(**est.get_params()).fit(store)
    np.testing.assert_array_equal(twin.transform(store).toarray(), Z.toarray())


def test_streamed_data_is_checked(tmp_path):
    path = tmp_path / "bad.f32"
    bad = np.memmap(path, dtype=np.float32, mode="w+", shape=(1000, 4))
    bad[:] = 1.0
    bad[737, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity .first in row 737"):
        SparseAutoencoder(n_components=8, k=2).fit(bad)
    with pytest.raises(ValueError, match="0 sample"):
        SparseAutoencoder(n_components=8, k=2).fit(SliceOnly(np.zeros((0, 4))))
    with pytest.raises(ValueError, match="Complex"):
        SparseAutoencoder(n_components=8, k=2).fit(SliceOnly(np.zeros((5, 4), complex)))
    with pytest.raises(TypeError, match="numeric dtype"):
        SparseAutoencoder(n_components=8, k=2).fit(SliceOnly(np.zeros((5, 4), "U3")))
    est = SparseAutoencoder(n_components=8, k=2, max_iter=1).fit(np.ones((20, 4)))
    with pytest.raises(ValueError, match="X has 3 features"):
        est.transform(SliceOnly(np.zeros((5, 3), np.float32)))


def _rss_file_kib() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    pytest.skip("no RssFile in /proc/self/status")


def test_streaming_a_memmap_leaves_its_pages_unmapped(tmp_path):
    path = tmp_path / "big.npy"
    X = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(40_000, 256))  # 39 MiB
    X[:] = np.arange(256, dtype=np.float32)
    X.flush()
    del X
    X = np.load(path, mmap_mode="r")
    before = _rss_file_kib()
    total = sum(float(block[:, 1].sum()) for block in iter_batches(X, 1000))
    after_streaming = _rss_file_kib()
    assert total == 40_000.0  # still read right
    assert after_streaming - before < X.nbytes / 1024 / 4  # < a quarter of the file mapped
    float(np.asarray(X).sum())  # control: a plain pass maps every page
    assert _rss_file_kib() - before > X.nbytes / 1024 * 0.9
    # Writable shared memmaps keep their writes; copy-on-write ones are never released.
    W = np.load(path, mmap_mode="r+")
    W[5] = -1.0
    data_module.release_rows(W, 0, 100)
    assert (W[5] == -1.0).all() and (np.load(path, mmap_mode="r")[5] == -1.0).all()
    C = np.load(path, mmap_mode="c")
    C[7] = 3.0
    data_module.release_rows(C, 0, 100)
    assert (C[7] == 3.0).all()
