"""One BlobStore contract, proven against every implementation.

The filesystem store (embedded mode) and the GCS store (on fake-gcs-server here, on
Cloud Storage in the cloud) must agree on generations, create-only and
compare-and-set preconditions, listings and errors: the registry's guarantees (one
number per version, aliases moved by compare-and-set) rest on exactly these.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelrail.adapters.local.filesystem import FilesystemStore
from modelrail.kernel.errors import NotFound, PreconditionFailed
from modelrail.kernel.ports import BlobStore
from modelrail.localcloud.emulators import Emulators
from tests.conftest import STATE_DEADLINE_S
from tests.fakes import InMemoryStore

# The GCS parameter needs the emulators: every such test shares one worker and one stack.
EMULATOR_MARKS = (pytest.mark.emulator, pytest.mark.xdist_group("emulators"))


def _gcs_store(emulators: Emulators, monkeypatch: pytest.MonkeyPatch) -> BlobStore:
    from modelrail.adapters.google.gcs import GcsStorage

    bucket = f"contract-{uuid.uuid4().hex[:12]}"
    with monkeypatch.context() as patch:
        # The client library reads the endpoint once, when the client is created.
        for name, value in emulators.env().items():
            patch.setenv(name, value)
        storage = GcsStorage(emulators.project)
        storage.client.create_bucket(bucket)
    return storage.bucket(bucket)


@pytest.fixture(
    params=[
        pytest.param("filesystem"),
        pytest.param("memory"),
        pytest.param("gcs", marks=EMULATOR_MARKS),
    ]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "filesystem":
        yield FilesystemStore(tmp_path, "contract-bucket")
    elif request.param == "memory":
        yield InMemoryStore("contract-bucket")  # the unit tests' fake keeps it too
    else:
        emulators = request.getfixturevalue("emulators")
        yield _gcs_store(emulators, request.getfixturevalue("monkeypatch"))


def test_write_then_read_returns_bytes_and_generation(store: BlobStore) -> None:
    generation = store.write("a/b.json", b'{"x": 1}', content_type="application/json")

    blob = store.read("a/b.json")

    assert blob.data == b'{"x": 1}'
    assert blob.generation == generation > 0
    assert blob.key == "a/b.json"


def test_read_of_a_missing_object_raises_not_found(store: BlobStore) -> None:
    with pytest.raises(NotFound):
        store.read("nothing/here.txt")


def test_create_only_conflicts_when_the_object_exists(store: BlobStore) -> None:
    first = store.write("claim.json", b"first", if_generation_match=0)

    with pytest.raises(PreconditionFailed):
        store.write("claim.json", b"second", if_generation_match=0)

    blob = store.read("claim.json")
    assert (blob.data, blob.generation) == (b"first", first)


def test_compare_and_set_succeeds_with_the_read_generation(store: BlobStore) -> None:
    first = store.write("alias.json", b"v1", if_generation_match=0)

    second = store.write("alias.json", b"v2", if_generation_match=first)

    assert second != first
    assert store.read("alias.json").data == b"v2"


def test_compare_and_set_conflicts_with_a_stale_generation(store: BlobStore) -> None:
    stale = store.write("alias.json", b"v1")
    current = store.write("alias.json", b"v2", if_generation_match=stale)

    with pytest.raises(PreconditionFailed):
        store.write("alias.json", b"v3", if_generation_match=stale)

    blob = store.read("alias.json")
    assert (blob.data, blob.generation) == (b"v2", current)


def test_compare_and_set_on_a_missing_object_conflicts(store: BlobStore) -> None:
    with pytest.raises(PreconditionFailed):
        store.write("absent.json", b"v1", if_generation_match=12345)

    with pytest.raises(NotFound):
        store.read("absent.json")


def test_unconditional_write_replaces_and_changes_the_generation(store: BlobStore) -> None:
    first = store.write("data.csv", b"a\n1\n")

    second = store.write("data.csv", b"a\n2\n")

    assert second != first
    assert store.read("data.csv").data == b"a\n2\n"


def test_read_of_the_current_generation_and_of_a_replaced_one(store: BlobStore) -> None:
    old = store.write("data.csv", b"old")
    new = store.write("data.csv", b"new")

    assert store.read("data.csv", generation=new).data == b"new"
    with pytest.raises(NotFound):
        store.read("data.csv", generation=old)  # no object versioning: old bytes are gone


def test_list_filters_by_prefix_sorted_with_generations_and_sizes(store: BlobStore) -> None:
    generations = {
        key: store.write(key, data)
        for key, data in [
            ("models/m/versions/2/manifest.json", b"22"),
            ("models/m/versions/1/manifest.json", b"1"),
            ("models/other.json", b"333"),
            ("runs/r/result.json", b"4444"),
        ]
    }

    listed = store.list("models/m/")

    assert [(i.key, i.generation, i.size) for i in listed] == [
        ("models/m/versions/1/manifest.json", generations["models/m/versions/1/manifest.json"], 1),
        ("models/m/versions/2/manifest.json", generations["models/m/versions/2/manifest.json"], 2),
    ]
    assert [i.key for i in store.list()] == sorted(generations)
    assert store.list("nothing/") == []
    # A prefix is a prefix of the key, not of a folder: part of a name matches too.
    assert [i.key for i in store.list("models/m")] == [i.key for i in listed]
    assert [i.key for i in store.list("models/m/versions/1/man")] == [
        "models/m/versions/1/manifest.json"
    ]
    assert [i.key for i in store.list("models/o")] == ["models/other.json"]
    assert [i.key for i in store.list("run")] == ["runs/r/result.json"]


def test_uri_names_the_bucket_and_key(store: BlobStore) -> None:
    assert store.uri("runs/r1/report.json") == f"gs://{store.bucket}/runs/r1/report.json"


def test_concurrent_create_only_writes_have_exactly_one_winner(store: BlobStore) -> None:
    contenders = 6
    barrier = threading.Barrier(contenders)
    outcomes: list[str] = []
    lock = threading.Lock()

    def contend(index: int) -> None:
        barrier.wait()
        try:
            store.write("versions/1/claim.json", f"claim {index}".encode(), if_generation_match=0)
            outcome = f"won {index}"
        except PreconditionFailed:
            outcome = "lost"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(STATE_DEADLINE_S)

    winners = [o for o in outcomes if o.startswith("won")]
    assert len(winners) == 1
    assert outcomes.count("lost") == contenders - 1
    assert store.read("versions/1/claim.json").data == f"claim {winners[0].split()[1]}".encode()


def test_concurrent_compare_and_set_increments_lose_no_update(store: BlobStore) -> None:
    store.write("counter", b"0", if_generation_match=0)
    workers, increments = 3, 4

    def increment() -> None:
        done = 0
        while done < increments:
            blob = store.read("counter")
            try:
                store.write(
                    "counter", str(int(blob.data) + 1).encode(), if_generation_match=blob.generation
                )
                done += 1
            except PreconditionFailed:
                continue

    threads = [threading.Thread(target=increment) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(STATE_DEADLINE_S)

    assert int(store.read("counter").data) == workers * increments


def test_open_reads_in_pieces_and_seeks(store: BlobStore) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    generation = store.write("big/data.bin", data)

    with store.open("big/data.bin") as stream:
        opened = (stream.key, stream.generation, stream.size)
        assert opened == ("big/data.bin", generation, len(data))
        head = stream.file.read(1000)
        stream.file.seek(len(data) - 10)
        tail = stream.file.read(100)  # past the end: what is there
        stream.file.seek(0)
        pieces = []
        while piece := stream.file.read(300_000):
            pieces.append(piece)

    assert head == data[:1000]
    assert tail == data[-10:]
    assert b"".join(pieces) == data


def test_open_never_serves_a_newer_generation(store: BlobStore) -> None:
    old = store.write("data.csv", b"old bytes " * 1000)

    with store.open("data.csv", generation=old) as stream:
        store.write("data.csv", b"new")
        assert stream.generation == old
        # A file keeps the bytes it opened; GCS without object versioning has dropped
        # them, and says so.
        try:
            read: bytes | None = stream.file.read()
        except NotFound:
            read = None
        assert read in (b"old bytes " * 1000, None)


def test_open_of_a_missing_object_or_generation_raises_not_found(store: BlobStore) -> None:
    current = store.write("data.csv", b"a\n1\n")

    with pytest.raises(NotFound):
        store.open("nothing/here.csv")
    with pytest.raises(NotFound):
        store.open("data.csv", generation=current + 1)


def test_delete_removes_the_object_and_ignores_a_missing_one(store: BlobStore) -> None:
    store.write("runs/r/snapshot/part-00000.parquet", b"part")
    store.write("runs/r/snapshot/keep.json", b"{}")

    store.delete("runs/r/snapshot/part-00000.parquet")
    store.delete("runs/r/snapshot/part-00000.parquet")  # again: nothing to do
    store.delete("never/written")

    assert [info.key for info in store.list("runs/r/")] == ["runs/r/snapshot/keep.json"]
    with pytest.raises(NotFound):
        store.read("runs/r/snapshot/part-00000.parquet")
    assert store.write("runs/r/snapshot/part-00000.parquet", b"again", if_generation_match=0)
