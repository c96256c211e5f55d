"""MONAI and TorchIO open .dstd files as they open NIfTI: the same voxels (scaled values), the
same (i, j, k) layout and RAS affine as their own NIfTI readers give for the scan the file was
made from; region reads equal crops of full reads; URLs work; bad input names the file."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from helpers import BUNDLED_CT
from servers import http_server

import dstdformat
from dstdformat.errors import LabelMismatchError, NotADstdFileError, PatchTooLargeError

monai = pytest.importorskip("monai")
tio = pytest.importorskip("torchio")
from monai.transforms import Compose, LoadImage, LoadImaged  # noqa: E402

from dstdformat.monai import DstdReader, RandDstdPatchd  # noqa: E402
from dstdformat.torchio import dstd_reader, read_dstd  # noqa: E402


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    root = tmp_path_factory.mktemp("readers")
    image = nib.load(str(BUNDLED_CT))
    data = np.asanyarray(image.dataobj)[:60, :50, :20]
    # Stored with a slope and intercept (as many NIfTI CTs are): readers must give HU.
    scaled = nib.Nifti1Image(((data + 1024) * 2).astype(np.int16), image.affine)
    scaled.header.set_slope_inter(0.5, -1024.0)
    nifti = root / "ct.nii.gz"
    nib.save(scaled, str(nifti))
    dstdformat.save(dstdformat.read_scan(nifti), root / "ct.dstd", tile_shape=(8, 32, 32))
    label = nib.Nifti1Image((data > 0).astype(np.uint8), image.affine)
    nib.save(label, str(root / "label.nii.gz"))
    dstdformat.save(dstdformat.read_scan(root / "label.nii.gz"), root / "label.dstd", tile_shape=(8, 32, 32))
    return root


def test_monai_loadimage_gives_what_its_nifti_reader_gives(scans):
    ours = LoadImage(reader=DstdReader)(str(scans / "ct.dstd"))
    theirs = LoadImage(reader="NibabelReader")(str(scans / "ct.nii.gz"))
    assert ours.shape == theirs.shape == (60, 50, 20)
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy().astype(np.float32))
    np.testing.assert_allclose(ours.affine.numpy(), theirs.affine.numpy(), atol=1e-5)
    np.testing.assert_array_equal(ours.meta["spatial_shape"], theirs.meta["spatial_shape"])
    assert ours.meta["space"] == theirs.meta["space"]
    # Without the reader named: MONAI picks it by suffix from the ones it is given.
    chosen = LoadImage(reader=[DstdReader()], image_only=True)(str(scans / "ct.dstd"))
    np.testing.assert_array_equal(chosen.numpy(), ours.numpy())


def test_monai_dictionary_pipelines_and_regions(scans):
    pipeline = Compose([LoadImaged(["image", "label"], reader=DstdReader)])
    item = pipeline({"image": str(scans / "ct.dstd"), "label": str(scans / "label.dstd")})
    full = item["image"].numpy()
    assert item["label"].shape == full.shape
    region = LoadImage(reader=DstdReader(roi_start=(5, 10, 3), roi_end=(37, 42, 19)))(str(scans / "ct.dstd"))
    np.testing.assert_array_equal(region.numpy(), full[5:37, 10:42, 3:19])
    corner = item["image"].affine.numpy() @ np.array([5, 10, 3, 1.0])
    np.testing.assert_allclose(region.affine.numpy()[:, 3], corner, atol=1e-5)
    patch = RandDstdPatchd(["image", "label"], roi_size=(16, 24, 8), label_keys=["label"])
    patch.set_random_state(7)
    for _ in range(3):
        out = patch({"image": str(scans / "ct.dstd"), "label": str(scans / "label.dstd")})
        assert out["image"].shape == (1, 16, 24, 8)
        i, j, k = np.rint(
            np.linalg.solve(item["image"].affine.numpy(), out["image"].affine.numpy()[:, 3])[:3]
        )
        i, j, k = int(i), int(j), int(k)
        np.testing.assert_array_equal(out["image"][0].numpy(), full[i : i + 16, j : j + 24, k : k + 8])
        np.testing.assert_array_equal(
            out["label"][0].numpy(), item["label"].numpy()[i : i + 16, j : j + 24, k : k + 8]
        )


def test_monai_reads_urls(scans):
    with http_server(scans) as server:
        # LoadImage folds "http://" to "http:/" (Path.expanduser); the reader unfolds it.
        got = LoadImage(reader=DstdReader)(f"{server.url}/ct.dstd")
    np.testing.assert_array_equal(got.numpy(), LoadImage(reader=DstdReader)(str(scans / "ct.dstd")).numpy())


def test_torchio_images_match_its_nifti_reader(scans):
    ours = tio.ScalarImage(scans / "ct.dstd", reader=read_dstd)
    theirs = tio.ScalarImage(scans / "ct.nii.gz")
    assert ours.shape == theirs.shape == (1, 60, 50, 20)
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy().astype(np.float32))
    np.testing.assert_allclose(ours.affine, theirs.affine, atol=1e-5)
    label = tio.LabelMap(scans / "label.dstd", reader=dstd_reader(scaled=False))
    subject = tio.Subject(ct=ours, label=label)
    sampler = tio.data.UniformSampler((16, 16, 8))
    patch = next(iter(sampler(subject, num_patches=1)))
    assert patch["ct"].shape == (1, 16, 16, 8)
    with http_server(scans) as server:
        remote = tio.ScalarImage(f"{server.url}/ct.dstd", reader=read_dstd, verify_path=False)
        np.testing.assert_array_equal(remote.numpy(), ours.numpy())


def test_readers_name_the_file_they_refuse(scans, tmp_path):
    fake = tmp_path / "fake.dstd"
    fake.write_bytes(b"\x00" * 256)
    # MONAI tries its other readers after ours and reports every reason in a RuntimeError.
    with pytest.raises(RuntimeError, match=r"fake\.dstd: not a \.dstd file"):
        LoadImage(reader=DstdReader)(str(fake))
    with pytest.raises(NotADstdFileError, match="fake.dstd"):
        tio.ScalarImage(fake, reader=read_dstd).load()
    with pytest.raises(PatchTooLargeError, match="ct.dstd"):
        LoadImage(reader=DstdReader(roi_start=(0, 0, 0), roi_end=(61, 10, 10)))(str(scans / "ct.dstd"))
    other = tmp_path / "other.dstd"
    dstdformat.save(np.zeros((20, 50, 61), np.uint8), other)
    with pytest.raises(LabelMismatchError, match="other.dstd"):
        RandDstdPatchd(["image", "label"], roi_size=(8, 8, 8))(
            {"image": str(scans / "ct.dstd"), "label": str(other)}
        )


@pytest.mark.parametrize("module,extra", [("monai", "monai"), ("torchio", "torchio")])
def test_a_missing_library_names_the_extra(module, extra):
    import subprocess
    import sys

    code = (
        f"import sys; sys.modules[{module!r}] = None\n"
        f"try:\n    import dstdformat.{module}\nexcept ImportError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert f"pip install 'dstdformat[{extra}]'" in out.stdout, out.stderr
