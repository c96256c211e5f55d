"""dstdformat.torch.PatchDataset: patches equal to the same region of a full read, labels that
line up, sampling that is the same in every worker, a DataLoader with fork and spawn workers
over local files, moto S3 and HTTP on 127.0.0.1, and clear errors for bad input."""

from __future__ import annotations

import fsspec
import numpy as np
import pytest
import torch
from helpers import BUNDLED_CT
from servers import http_server, s3_server

import dstdformat
from dstdformat.errors import InvalidInputError, LabelMismatchError, NotADstdFileError, PatchTooLargeError
from dstdformat.torch import PatchDataset

PATCH = (8, 24, 32)


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    root = tmp_path_factory.mktemp("patches")
    scan = dstdformat.read_scan(BUNDLED_CT)
    arrays = {"a": scan.array[:24, :64, :80].copy(), "b": scan.array[10:30, 20:76, :72].copy()}
    (root / "scans").mkdir()
    (root / "labels").mkdir()
    for name, array in arrays.items():
        # Slope 0.5 / intercept -100 on "b": the patches must be in scaled values.
        meta = {"slope": 0.5, "intercept": -100.0} if name == "b" else {}
        dstdformat.save(array, root / "scans" / f"{name}.dstd", tile_shape=(8, 32, 32), **meta)
        dstdformat.save(
            (array > 100).astype(np.uint8), root / "labels" / f"{name}.dstd", tile_shape=(8, 32, 32)
        )
    lossy = root / "lossy.dstd"
    dstdformat.save(arrays["a"], lossy, codec="deepstd", codec_options={"ratio": 32}, tile_shape=(8, 64, 80))
    return root, arrays


def _expected(collection, item) -> np.ndarray:
    root, arrays = collection
    name = item["scan"].removesuffix(".dstd")
    z, y, x = (int(v) for v in item["location"])
    crop = arrays[name][z : z + PATCH[0], y : y + PATCH[1], x : x + PATCH[2]].astype(np.float64)
    return (crop * 0.5 - 100.0 if name == "b" else crop).astype(np.float32)


def test_random_patches_are_the_regions_of_a_full_read_with_their_labels(collection):
    root, arrays = collection
    dataset = PatchDataset(
        root / "scans", PATCH, samples_per_volume=6, labels=root / "labels", cache_bytes=1 << 20
    )
    assert len(dataset) == 12 and [s.name for s in dataset.scans] == ["a.dstd", "b.dstd"]
    for index in range(len(dataset)):
        item = dataset[index]
        assert item["image"].shape == (1, *PATCH) and item["image"].dtype == torch.float32
        np.testing.assert_array_equal(item["image"][0].numpy(), _expected(collection, item))
        stored = (item["image"][0].numpy() + (100.0 if item["scan"] == "b.dstd" else 0.0)) / (
            0.5 if item["scan"] == "b.dstd" else 1.0
        )
        np.testing.assert_array_equal(item["label"][0].numpy(), (stored > 100).astype(np.int64))
        volume = dstdformat.open(root / "scans" / item["scan"])
        corner = np.append(item["location"].numpy(), 1.0)
        np.testing.assert_allclose(item["affine"].numpy()[:, 3], volume.affine @ corner)
        np.testing.assert_allclose(item["spacing"].numpy(), volume.spacing)
    cache = dataset._state.cache
    assert cache.hits > 0 and cache.nbytes <= 1 << 20  # tiles reused, within the budget


def test_sampling_is_the_same_in_every_process_and_moves_with_the_epoch(collection):
    root, _ = collection
    one, two = (PatchDataset(root / "scans", PATCH, samples_per_volume=5, seed=3) for _ in range(2))
    corners = [one.corner(i) for i in range(len(one))]
    assert corners == [two.corner(i) for i in range(len(two))]
    assert len(set(corners)) > 5
    one.set_epoch(1)
    assert [one.corner(i) for i in range(len(one))] != corners


def test_foreground_and_class_ratios_centre_patches_on_labelled_voxels(collection):
    root, _ = collection
    dataset = PatchDataset(
        root / "scans", PATCH, samples_per_volume=10, labels=root / "labels", foreground=1.0
    )
    for index in range(len(dataset)):
        label = dataset[index]["label"][0].numpy()
        assert label[PATCH[0] // 2, PATCH[1] // 2, PATCH[2] // 2] == 1 or label.any()
    assert all(dataset[i]["label"].any() for i in range(len(dataset)))
    background = PatchDataset(
        root / "scans", PATCH, samples_per_volume=10, labels=root / "labels", class_ratios={0: 1.0}
    )
    centres = [background[i]["label"][0, PATCH[0] // 2, PATCH[1] // 2, PATCH[2] // 2] for i in range(20)]
    assert all(int(c) == 0 for c in centres)


def test_grid_patches_cover_every_voxel(collection):
    root, arrays = collection
    dataset = PatchDataset(
        root / "scans" / "a.dstd", PATCH, sampling="grid", stride=(6, 20, 30), scaled=False
    )
    seen = np.zeros(arrays["a"].shape, bool)
    for index in range(len(dataset)):
        item = dataset[index]
        z, y, x = (int(v) for v in item["location"])
        region = (slice(z, z + PATCH[0]), slice(y, y + PATCH[1]), slice(x, x + PATCH[2]))
        np.testing.assert_array_equal(item["image"][0].numpy(), arrays["a"][region])
        assert item["image"].dtype == torch.int16
        seen[region] = True
    assert seen.all()


def test_lossy_patches_equal_the_same_region_of_a_full_read(collection):
    root, _ = collection
    full = dstdformat.open(root / "lossy.dstd").read(refine=False, scaled=True)
    dataset = PatchDataset(root / "lossy.dstd", PATCH, samples_per_volume=4)
    for index in range(len(dataset)):
        item = dataset[index]
        z, y, x = (int(v) for v in item["location"])
        np.testing.assert_array_equal(
            item["image"][0].numpy(), full[z : z + PATCH[0], y : y + PATCH[1], x : x + PATCH[2]]
        )


def _loader_patches(dataset, workers: int, method: str | None) -> dict[int, np.ndarray]:
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=3,
        num_workers=workers,
        multiprocessing_context=method,
        timeout=120 if workers else 0,
    )
    got = {}
    for batch in loader:
        for image, location, scan in zip(batch["image"], batch["location"], batch["scan"]):
            got[(scan, tuple(location.tolist()))] = image.numpy()
    return got


@pytest.mark.parametrize("workers,method", [(0, None), (2, "fork"), (2, "spawn")])
def test_a_dataloader_reads_local_s3_and_http_collections(collection, workers, method):
    root, _ = collection
    local = PatchDataset(root / "scans", PATCH, samples_per_volume=4)
    want = _loader_patches(local, 0, None)
    assert len(want) == len(local)
    assert _loader_patches(local, workers, method).keys() == want.keys()
    with s3_server() as (_, options):
        fs = fsspec.filesystem("s3", **options)
        bucket = f"patches-{workers}-{method or 'main'}"
        fs.mkdir(bucket)
        for name in ("a", "b"):
            fs.put(str(root / "scans" / f"{name}.dstd"), f"{bucket}/scans/{name}.dstd")
        remote = PatchDataset(f"s3://{bucket}/scans", PATCH, samples_per_volume=4, storage_options=options)
        remote[0]  # volumes opened in the parent too: the workers must open their own
        got = _loader_patches(remote, workers, method)
        assert got.keys() == want.keys()
        for key, image in got.items():
            np.testing.assert_array_equal(image, want[key])
    with http_server(root / "scans") as server:
        urls = {name: f"{server.url}/{name}" for name in ("a.dstd", "b.dstd")}
        remote = PatchDataset(urls, PATCH, samples_per_volume=4)
        remote[0]
        got = _loader_patches(remote, workers, method)
        for key, image in got.items():
            np.testing.assert_array_equal(image, want[key])


def test_bad_input_is_refused_naming_the_file(collection, tmp_path):
    root, _ = collection
    with pytest.raises(PatchTooLargeError, match="b.dstd"):
        PatchDataset(root / "scans", (8, 60, 32))
    small = tmp_path / "small.dstd"
    dstdformat.save(np.zeros((24, 64, 40), np.uint8), small)
    with pytest.raises(LabelMismatchError, match="small.dstd"):
        PatchDataset(root / "scans" / "a.dstd", PATCH, labels=[small])
    with pytest.raises(LabelMismatchError, match="no label for scan b.dstd"):
        PatchDataset(root / "scans", PATCH, labels={"a.dstd": root / "labels" / "a.dstd"})
    with pytest.raises(InvalidInputError, match="not a .dstd file"):
        PatchDataset(str(BUNDLED_CT), PATCH)
    fake = tmp_path / "fake.dstd"
    fake.write_bytes(b"not a dstd file at all" * 10)
    with pytest.raises(NotADstdFileError, match="fake.dstd"):
        PatchDataset(fake, PATCH)
    with pytest.raises(InvalidInputError, match="no .dstd files"):
        PatchDataset(str(tmp_path / "*.none.dstd"), PATCH)
    with pytest.raises(InvalidInputError, match="need labels"):
        PatchDataset(root / "scans", PATCH, foreground=0.5)
    with pytest.raises(InvalidInputError, match="patch_size"):
        PatchDataset(root / "scans", (8, 0, 4))
