"""Property-based round trips: any array and any metadata come back exactly through the container."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import dstdformat
from dstdformat.codecs.lossless import LosslessCodec
from dstdformat.container.header import DTYPES
from dstdformat.container.writer import encode_volume
from dstdformat.metadata import ScanMetadata

_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)

shapes = st.tuples(st.integers(1, 9), st.integers(1, 17), st.integers(1, 17))
arrays = st.sampled_from(DTYPES).flatmap(
    lambda dtype: hnp.arrays(
        np.dtype(dtype),
        shapes,
        elements=hnp.from_dtype(np.dtype(dtype), allow_nan=True, allow_infinity=True, allow_subnormal=True),
    )
)
tiles = st.none() | st.tuples(st.integers(1, 9), st.integers(1, 17), st.integers(1, 17))
positive = st.floats(1e-3, 1e3, allow_nan=False, allow_infinity=False)
finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | finite | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def metadata(draw) -> ScanMetadata:
    spacing = draw(st.tuples(positive, positive, positive))
    # A rotation from three angles, scaled by the spacing, and any origin: a valid affine.
    a, b, c = (draw(st.floats(-math.pi, math.pi)) for _ in range(3))
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rx = np.array([[1, 0, 0], [0, math.cos(c), -math.sin(c)], [0, math.sin(c), math.cos(c)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ ry @ rx * np.array(spacing)
    affine[:3, 3] = draw(st.tuples(finite, finite, finite))
    slope = draw(finite.filter(lambda v: v != 0))
    return ScanMetadata(
        affine=affine,
        slope=slope,
        intercept=draw(finite),
        modality=draw(st.none() | st.text(max_size=10)),
        attributes=draw(st.dictionaries(st.text(max_size=10), json_values, max_size=4)),
        provenance=draw(st.dictionaries(st.text(max_size=10), json_values, max_size=3)),
    )


@_SETTINGS
@given(array=arrays, meta=metadata(), tile=tiles)
def test_any_array_and_metadata_round_trip(array, meta, tile):
    data = encode_volume(array, codec=LosslessCodec(), metadata=meta, tile_shape=tile)
    with dstdformat.open(data) as volume:
        back = volume.read()
        assert back.dtype == array.dtype and back.shape == array.shape
        # Bit for bit, NaN payloads and signed zeros included.
        assert back.tobytes() == np.ascontiguousarray(array).tobytes()
        got = volume.metadata
        np.testing.assert_array_equal(got.affine, meta.affine)
        assert got.spacing == meta.spacing
        assert (got.slope, got.intercept, got.modality) == (meta.slope, meta.intercept, meta.modality)
        assert got.attributes == meta.attributes and got.provenance == meta.provenance
        assert got.original_dtype == array.dtype.name
        # Any region reads what the same slice of the array holds.
        z, y, x = (s // 2 for s in array.shape)
        assert volume[z:, : y + 1, x:].tobytes() == np.ascontiguousarray(array[z:, : y + 1, x:]).tobytes()


@_SETTINGS
@given(array=arrays)
def test_big_endian_and_strided_inputs_store_the_same_values(array):
    swapped = array.astype(array.dtype.newbyteorder(">"))[:, ::-1]
    with dstdformat.open(encode_volume(swapped, codec=LosslessCodec())) as volume:
        back = volume.read()
    assert back.dtype == array.dtype
    assert back.tobytes() == np.ascontiguousarray(array[:, ::-1]).tobytes()
