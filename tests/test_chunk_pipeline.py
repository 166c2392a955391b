"""The fitting task's stage pipeline with stand-in stages: loading runs ahead, writing runs behind, writes keep
chunk order, and a chunk that raises is retried only after every write has landed."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from dgp_fitting.chunk_pipeline import ChunkWork, ImageCache, run_pipelined

#: Generous: a stage waiting for another that never comes fails the test instead of hanging it.
WAIT_S = 10.0


def work(index: int) -> ChunkWork:
    return ChunkWork(index, [], [], None, [], {"crops/status": np.zeros(0, np.int8)})


def test_next_chunk_loads_and_previous_chunk_writes_while_one_fits():
    loading = {i: threading.Event() for i in range(3)}
    writing = {i: threading.Event() for i in range(3)}
    overlapped = []

    def load(index):
        loading[index].set()
        return work(index)

    def fit(w):
        if w.index + 1 in loading:  # the next chunk's load starts before this fit ends
            overlapped.append(("load", w.index + 1, loading[w.index + 1].wait(WAIT_S)))
        if w.index - 1 in writing:  # the previous chunk's write starts before this fit ends
            overlapped.append(("write", w.index - 1, writing[w.index - 1].wait(WAIT_S)))

    def write(w):
        writing[w.index].set()
        return {"chunk": w.index}

    out = run_pipelined([0, 1, 2], load, fit, write, retry=lambda i: pytest.fail("nothing failed"), retries=2)
    assert out == [{"chunk": 0}, {"chunk": 1}, {"chunk": 2}]
    assert overlapped == [("load", 1, True), ("load", 2, True), ("write", 0, True), ("write", 1, True)]


def test_writes_keep_chunk_order_on_one_thread():
    written, threads = [], set()

    def write(w):
        threads.add(threading.get_ident())
        written.append(w.index)
        return {"chunk": w.index}

    chunks = [5, 3, 4, 9]
    run_pipelined(chunks, work, lambda w: None, write, retry=lambda i: {}, retries=0)
    assert written == chunks
    assert len(threads) == 1 and threading.get_ident() not in threads


@pytest.mark.parametrize("stage", ["load", "fit", "write"])
def test_a_chunk_that_keeps_raising_is_retried_after_the_writes_then_reported(stage):
    events, retries = [], 2

    def load(index):
        if stage == "load" and index == 4:
            raise RuntimeError("synthetic failure")
        return work(index)

    def fit(w):
        if stage == "fit" and w.index == 4:
            raise RuntimeError("synthetic failure")

    def write(w):
        if stage == "write" and w.index == 4:
            raise RuntimeError("synthetic failure")
        events.append(("write", w.index))
        return {"chunk": w.index, "fitted": 2}

    def retry(index):
        events.append(("retry", index))
        raise RuntimeError("synthetic failure again")

    out = run_pipelined([3, 4, 5], load, fit, write, retry, retries)
    assert events == [("write", 3), ("write", 5)] + [("retry", 4)] * retries
    assert out[0] == {"chunk": 3, "fitted": 2} and out[2] == {"chunk": 5, "fitted": 2}
    assert out[1]["chunk"] == 4 and "synthetic failure again" in out[1]["error"]


def test_a_retry_that_succeeds_takes_the_chunks_place():
    attempts = []

    def fit(w):
        if w.index == 1:
            raise RuntimeError("transient")

    def retry(index):
        attempts.append(index)
        return {"chunk": index, "fitted": 1}

    out = run_pipelined([0, 1, 2], work, fit, lambda w: {"chunk": w.index}, retry, retries=2)
    assert out == [{"chunk": 0}, {"chunk": 1, "fitted": 1}, {"chunk": 2}]
    assert attempts == [1]


def test_without_retries_the_first_error_is_reported():
    def fit(w):
        raise ValueError("bad chunk")

    assert run_pipelined([7], work, fit, lambda w: {}, lambda i: {}, retries=0) == [
        {"chunk": 7, "error": "ValueError('bad chunk')"}
    ]


def test_image_cache_decodes_each_photo_once_and_records_unreadable_files(tmp_path, photo, monkeypatch):
    from PIL import Image

    from dgp_fitting import chunk_pipeline

    Image.fromarray((photo("astronaut", 0, 0, 32) * 255).round().astype(np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    decoded = []
    real = chunk_pipeline.read_image
    monkeypatch.setattr(chunk_pipeline, "read_image", lambda path: decoded.append(path.name) or real(path))
    cache = ImageCache(tmp_path)
    pixels, digest = cache.get("a.png")
    assert pixels.shape == (32, 32, 3) and len(digest) == 64
    assert cache.get("a.png")[0] is pixels
    reason, digest_of_broken = cache.get("broken.png")
    assert isinstance(reason, str) and "\n" not in reason and len(digest_of_broken) == 64  # the file is there
    reason_missing, no_digest = cache.get("missing.png")
    assert "missing.png" in reason_missing and no_digest == ""
    cache.keep_only({"broken.png"})
    cache.get("a.png")
    assert decoded == ["a.png", "broken.png", "a.png"]


def test_parallel_decoding_gives_what_one_thread_gives(tmp_path, photo):
    from PIL import Image

    names = ("astronaut", "coffee", "chelsea", "rocket")
    for name in names:
        Image.fromarray((photo(name, 0, 0, 48) * 255).round().astype(np.uint8)).save(tmp_path / f"{name}.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    sources = [*(f"{n}.png" for n in names), "broken.png", "missing.png"]
    one, many = ImageCache(tmp_path, threads=1), ImageCache(tmp_path, threads=4)
    one.prefetch(sources)
    many.prefetch(sources)
    for source in sources:
        (a, digest_a), (b, digest_b) = one.get(source), many.get(source)
        assert digest_a == digest_b
        if isinstance(a, str):
            assert a == b
        else:
            np.testing.assert_array_equal(a, b)
