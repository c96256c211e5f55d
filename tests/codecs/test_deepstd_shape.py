"""Shape-coded deepstd files: texture on a template-aligned grid, warped back on decoding."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import phantom_hu

import dstdformat
from dstdformat.codecs.deepstd import DeepSTDVolumeCodec as Codec
from dstdformat.codecs.deepstd.shape import decode as shape_decode
from dstdformat.codecs.deepstd.shape import field as shape_field
from dstdformat.container.format import NO_TILE, SectionKind
from dstdformat.errors import CodecError, CorruptHeaderError, InvalidInputError
from dstdformat.model.template import Template
from dstdformat.model.warp import cubic_box
from dstdformat.zoo.registry import DEFAULT_TEMPLATE, MODEL_PATH_ENV
from dstdformat.zoo.templates import find_template, save_template

SPACING = (4.0, 3.0, 3.0)


@pytest.fixture
def template(tmp_path, monkeypatch):
    """A phantom template, found by path and (through DSTD_MODEL_PATH) by id."""
    folder = tmp_path / "templates"
    folder.mkdir()
    path = save_template(
        Template.from_scan(phantom_hu(shape=(32, 48, 48), spacing=SPACING), SPACING, "b"), folder
    )
    monkeypatch.setenv(MODEL_PATH_ENV, str(folder))
    return path


def scan(seed: int = 0) -> np.ndarray:
    """The phantom, larger and moved, with noise, -2048 padding and a speck of metal."""
    rng = np.random.default_rng(seed)
    hu = phantom_hu(shape=(30, 44, 50), spacing=SPACING, scale=1.05, centre_mm=(0, 6, 0))
    hu = hu + rng.normal(0, 20, hu.shape)
    hu[:, :3] = -2048
    hu[15, 20:22, 25:27] = 6000
    return hu.astype(np.int16)


def save(path, array, codec, spacing=SPACING, **kwargs):
    dstdformat.save(array, path, codec=codec, spacing=spacing, **kwargs)
    return dstdformat.open(path)


def test_shape_coded_file_round_trip_and_lazy_regions(tmp_path, template, test_model, monkeypatch):
    from dstdformat.codecs.deepstd import codec as codec_module

    # Small texture tiles and refinement blocks, so that regions cross many of both.
    monkeypatch.setattr(Codec, "preferred_tile_shape", (4, 16, 24))
    monkeypatch.setattr(codec_module, "REFINE_BLOCK", (4, 8, 12))
    vol = scan()
    codec = Codec(ratio=5, model="test-refiner", shape=str(template), shape_policy="always", shape_steps=30)
    volume = save(tmp_path / "s.dstd", vol, codec, tile_shape=(8, 16, 24))
    header = volume.header["codec"]
    assert header["version"] == 3 and header["params"]["shape"] == f"template-{template.stem[9:]}"
    record, texture = header["state"]["shape"], shape_field.TextureGrid.from_json(header["state"]["texture"])
    assert record["used"] and record["ncc_affine"] > 0.9 and record["folding_fraction"] == 0.0
    kinds = [key[0] for key in volume.reader.sections]
    assert kinds.count(SectionKind.SHAPE) == 1
    texture_tiles = sorted(t for k, t in volume.reader.sections if k == SectionKind.TEXTURE)
    assert texture_tiles == list(range(texture.grid.n_tiles)) and texture.grid.n_tiles > 8
    assert record["shape_bytes"] == volume.reader.sections[(SectionKind.SHAPE, NO_TILE)].length
    full = volume.read()
    far = (vol < -1024 - 128) | (vol > 3071 + 128)
    np.testing.assert_array_equal(full[far], vol[far])  # padding and metal: exact
    inside = ~far  # a misplaced warp would be off by hundreds of HU at the phantom's edges
    assert np.abs(full[inside].astype(float) - vol[inside]).mean() < 120
    for key in [np.s_[7], np.s_[3:11, 10:40, 5:45], np.s_[:, 17], np.s_[..., 49], np.s_[15, 20:22, 25:27]]:
        np.testing.assert_array_equal(volume[key], full[key])
    # Lazy: one slice fetches, in one request, exactly the texture tiles under the cubic box of
    # its preimage, and its exact voxels.
    fresh = dstdformat.open(tmp_path / "s.dstd")
    fresh[0:1]  # decodes the shape section and the first slice
    decoder = shape_decode.ShapeDecoder(
        fresh.decode_context, fresh.reader.read_sections, codec._decode_texture, codec.model is not None
    )
    region = (slice(20, 21), slice(0, 44), slice(0, 50))
    box = cubic_box(decoder._voxels(region), texture.frame.shape)
    tiles = texture.grid.tiles_in_region(box)
    assert len(tiles) <= texture.grid.n_tiles // 3
    state = fresh.header["codec"]["state"]
    expected = [(SectionKind.TEXTURE, t) for t in tiles] + [
        (SectionKind.OUTLIERS, t)
        for t in fresh.decode_context.grid.tiles_in_region(region)
        if t in state["outlier_tiles"]
    ]
    asked = []
    read_sections = fresh.reader.read_sections
    fresh.reader.read_sections = lambda keys: asked.append(sorted(keys)) or read_sections(keys)
    fresh.io_stats.reset()
    fresh[20]
    assert asked == [sorted(expected)] and fresh.io_stats.requests == 1


def test_warp_round_trip_is_nearly_exact_for_the_template_itself(tmp_path, monkeypatch):
    """Near-lossless texture, a scan equal to the template: all that is left is the warp's
    interpolation (measured 2.6 HU against 0.8 without the shape)."""
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(phantom_hu(shape=(32, 48, 48), spacing=SPACING), 1.0)
    folder = tmp_path / "t"
    folder.mkdir()
    path = save_template(Template.from_scan(smooth, SPACING), folder)
    vol = smooth.astype(np.int16)
    volume = save(
        tmp_path / "a.dstd",
        vol,
        Codec(quality=70, model=None, shape=str(path), shape_steps=30, shape_policy="always"),
    )
    assert volume.header["codec"]["state"]["shape"]["ncc_final"] > 0.999
    error = np.abs(volume.read().astype(float) - vol)
    assert error.mean() < 4 and error.max() < 40


def test_scan_far_from_the_template_is_coded_texture_only(tmp_path, template):
    noise = np.random.default_rng(1).integers(-1000, 1500, (24, 40, 40)).astype(np.int16)
    shaped_file = save(
        tmp_path / "a.dstd", noise, Codec(ratio=8, model=None, shape=str(template), shape_steps=10)
    )
    state = shaped_file.header["codec"]["state"]
    assert state["shape"]["used"] is False and "far from the template" in state["shape"]["reason"]
    assert "texture" not in state
    assert all(k != SectionKind.SHAPE for k, _ in shaped_file.reader.sections)
    plain = save(tmp_path / "b.dstd", noise, Codec(ratio=8, model=None))
    np.testing.assert_array_equal(shaped_file.read(), plain.read())  # exactly the texture-only coding


def test_encoding_without_metadata_is_texture_only(template):
    """Files always carry a spacing (1 mm when unknown); a codec called without metadata has none."""
    from dstdformat.tiling import TileGrid

    vol = scan()
    encoded = Codec(ratio=8, model=None, shape=str(template)).encode(vol, TileGrid(vol.shape, vol.shape))
    assert encoded.state["shape"] == {
        "used": False,
        "reason": "the scan has no voxel spacing to register with",
    }


def test_best_policy_keeps_the_coding_that_decodes_closer(tmp_path, template):
    vol = scan(seed=3)
    best = save(tmp_path / "best.dstd", vol, Codec(ratio=12, model=None, shape=str(template), shape_steps=30))
    always = save(
        tmp_path / "always.dstd",
        vol,
        Codec(ratio=12, model=None, shape=str(template), shape_steps=30, shape_policy="always"),
    )
    plain = save(tmp_path / "plain.dstd", vol, Codec(ratio=12, model=None))
    errors = {
        name: float(np.abs(v.read().astype(float) - vol).mean())
        for name, v in (("best", best), ("always", always), ("plain", plain))
    }
    assert errors["best"] == pytest.approx(min(errors["always"], errors["plain"]), abs=1e-9)
    record = best.header["codec"]["state"]["shape"]
    if record["used"]:
        assert record["mae"] == pytest.approx(errors["always"], abs=0.01)
        assert record["mae_texture_only"] == pytest.approx(errors["plain"], abs=0.01)
    else:
        assert "texture only decodes closer" in record["reason"]
        assert f"{errors['always']:.2f}" in record["reason"] and f"{errors['plain']:.2f}" in record["reason"]


def test_shape_settings_config_and_errors(tmp_path, template):
    codec = Codec(ratio=64, shape=str(template), shape_steps=7, shape_policy="always")
    config = codec.get_config()
    assert config["shape"].startswith("template-") and str(tmp_path) not in json.dumps(config)
    again = Codec.from_config(config)
    assert again == codec and again.shape == config["shape"]
    assert Codec(ratio=64, base="sperr").describe()["version"] == 2 and codec.describe()["version"] == 4
    assert Codec(ratio=64, base="sperr", shape=str(template)).describe()["version"] == 3
    assert Codec(shape="default").shape == DEFAULT_TEMPLATE
    shipped = find_template("default")  # the package's template: present and intact
    assert shipped.id == DEFAULT_TEMPLATE and shipped.array.ndim == 3
    with pytest.raises(InvalidInputError, match="max_error"):
        Codec(max_error=5, shape=str(template))
    with pytest.raises(InvalidInputError, match="shape_policy"):
        Codec(shape=str(template), shape_policy="sometimes")
    with pytest.raises(InvalidInputError, match="does not exist"):
        Codec(shape=str(tmp_path / "missing.safetensors"))
    unknown = Codec(ratio=8, model=None, shape="template-" + "0" * 64)
    with pytest.raises(CodecError, match="unknown template 'template-0000"):
        dstdformat.save(scan(), tmp_path / "x.dstd", codec=unknown, spacing=SPACING)
    assert not (tmp_path / "x.dstd").exists()


def test_damaged_shape_state_and_old_readers_are_refused(tmp_path, template, monkeypatch):
    volume = save(
        tmp_path / "s.dstd",
        scan(),
        Codec(ratio=8, model=None, shape=str(template), shape_steps=10, shape_policy="always"),
    )
    ctx = volume.decode_context
    region = (slice(0, 2), slice(0, 4), slice(0, 4))
    for change in (
        {"texture": {"shape": [0, 1, 2]}},
        {"shape": {"used": True}},
        {"outlier_tiles": [999]},
        {"bits_per_voxel": [1.0] * 5},
    ):  # the texture grid has 1 tile
        bad = type(ctx)(ctx.shape, ctx.dtype, ctx.grid, ctx.params, {**ctx.state, **change}, ctx.model)
        with pytest.raises(CorruptHeaderError):
            Codec(ratio=8, model=None).decode_region(bad, region, volume.reader.read_sections)
    monkeypatch.setattr(Codec, "codec_version", 2)  # a reader from before shape coding
    with pytest.raises(CodecError, match="version 3"):
        dstdformat.open(tmp_path / "s.dstd").read()
