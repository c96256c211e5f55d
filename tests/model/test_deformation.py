"""Shape branch: coordinates, the SIREN pair, registration on a synthetic pair with a known answer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import phantom_hu

from dstdformat.model.deformation import (
    COORD_SCALE_MM,
    AffineMap,
    CycleDeformation,
    Siren,
    SirenConfig,
    VolumeFrame,
    jacobian_determinant,
    ncc,
    sample,
)
from dstdformat.model.registration import RegistrationConfig, register
from dstdformat.model.warp import CoarseField, cubic_box, resample, texture_frame


def test_frames_sample_their_own_voxels_exactly():
    frame = VolumeFrame((5, 6, 7), (2.0, 1.0, 0.5))
    volume = torch.arange(5 * 6 * 7, dtype=torch.float32).reshape(5, 6, 7)
    np.testing.assert_allclose(sample(volume, frame, frame.grid()), volume, atol=1e-3)
    voxel = frame.to_voxel(frame.grid())
    np.testing.assert_allclose(voxel[2, 3, 4], [2, 3, 4], atol=1e-5)
    shifted = VolumeFrame((3, 3, 3), (1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    assert float(shifted.grid()[1, 1, 1, 0]) == pytest.approx(1.0 / COORD_SCALE_MM)


def test_a_fresh_deformation_is_the_affine_and_affines_invert():
    affine = AffineMap((0.1, -0.05, 0.02))
    with torch.no_grad():
        affine.linear.copy_(torch.tensor([[0.05, 0.01, 0], [0, -0.03, 0.02], [0.01, 0, 0.04]]))
    deformation = CycleDeformation(affine, SirenConfig(width=16, depth=1))
    points = torch.rand(50, 3) * 2 - 1
    with torch.no_grad():
        np.testing.assert_allclose(deformation.to_template(points), affine(points), atol=1e-6)
        np.testing.assert_allclose(deformation.to_scan(deformation.to_template(points)), points, atol=1e-5)
    restored = AffineMap.from_array(affine.as_array())
    with torch.no_grad():
        np.testing.assert_allclose(restored(points), affine(points), atol=1e-6)
    # A fresh SIREN outputs zero displacement: its residual map has det J = 1 everywhere.
    net = Siren(SirenConfig(width=8, depth=1))
    _, det = jacobian_determinant(lambda x: x + net(x), points)
    np.testing.assert_allclose(det.detach(), 1.0, atol=1e-6)
    _, det = jacobian_determinant(lambda x: 2 * x, points)
    np.testing.assert_allclose(det.detach(), 8.0, atol=1e-5)


def test_registration_recovers_a_known_shift():
    """The same phantom 10% larger and moved 12 mm along i and 8 mm along j: phi must map the
    scan's lung centre onto the template's."""
    spacing = (4.0, 3.0, 3.0)
    template = phantom_hu(spacing=spacing)
    scan = phantom_hu(spacing=spacing, centre_mm=(0.0, 8.0, -12.0), scale=1.1)
    config = RegistrationConfig(
        siren=SirenConfig(width=16, depth=1), resolution_mm=3.0, affine_steps=150, steps=60, points=2048
    )
    result = register(scan, spacing, template, spacing, config)
    assert result.ncc_affine > result.ncc_start
    assert result.ncc_final > 0.9
    assert result.folding_fraction == 0.0
    lung_in_scan = torch.tensor([[0.0, 15.0 * 1.1 + 8.0, -15.0 * 1.1 - 12.0]]) / COORD_SCALE_MM
    with torch.no_grad():
        mapped = result.deformation.to_template(lung_in_scan) * COORD_SCALE_MM
    np.testing.assert_allclose(mapped[0], [0.0, 15.0, -15.0], atol=3.0)  # within a voxel
    assert set(result.summary()) == {
        "ncc_start",
        "ncc_affine",
        "ncc_final",
        "folding_fraction",
        "cycle_error_mm",
        "seconds",
    }


def test_texture_round_trip_through_a_coarse_field():
    """scan -> template-frame texture -> scan with a pure translation: only interpolation is lost,
    and a region's preimage box covers what the region reads."""
    spacing = (4.0, 3.0, 3.0)
    scan = torch.as_tensor(phantom_hu(spacing=spacing))
    frame = VolumeFrame(tuple(scan.shape), spacing)
    shift = torch.tensor([0.0, 6.0, -9.0]) / COORD_SCALE_MM
    affine = AffineMap(shift.tolist())
    phi = CoarseField(affine, frame)
    texture_at = texture_frame(phi, frame, affine.as_array()[:, :3])
    assert texture_at.shape == frame.shape  # a translation keeps the voxel count
    psi = CoarseField(affine.inverse, texture_at)
    texture = resample(scan, frame, psi, texture_at)
    back = resample(texture, texture_at, phi, frame)
    assert float((back - scan).abs().mean()) < 1.0  # whole-voxel shift: exact but for the borders
    region = [slice(5, 9), slice(10, 20), slice(3, 30)]
    box = cubic_box(texture_at.to_voxel(phi(frame.grid(region).reshape(-1, 3))), texture_at.shape)
    assert all(b.start <= r.start and r.stop <= b.stop for b, r in zip(box, region))
    assert ncc(back.flatten(), scan.flatten()) > 0.99


def test_reference_is_the_affine_medoid_and_templates_are_content_addressed(tmp_path):
    from dstdformat.errors import CodecError
    from dstdformat.model.template import Template, select_reference
    from dstdformat.zoo.templates import load_template, save_template

    spacing = (4.0, 3.0, 3.0)
    # Two scans near the plain phantom, one odd one (much larger and moved): the plain one wins.
    volumes = [
        (phantom_hu(spacing=spacing, scale=1.15, centre_mm=(0, 10, 5)), spacing),
        (phantom_hu(spacing=spacing), spacing),
        (phantom_hu(spacing=spacing, scale=0.9, centre_mm=(0, -6, 0)), spacing),
    ]
    choice = select_reference(volumes, affine_steps=30, resolution_mm=4.0)
    assert choice.index == 1 and len(choice.mean_ncc) == 3
    template = Template.from_scan(volumes[1][0], spacing, source="phantom", resolution_mm=6.0)
    assert template.array.dtype == np.int16 and template.spacing[1] == pytest.approx(6.0)
    path = save_template(template, tmp_path)
    assert path.name == f"template-{template.sha256}.safetensors"
    again = load_template(path, sha256=template.sha256)
    np.testing.assert_array_equal(again.array, template.array)
    assert again.spacing == template.spacing and again.source == "phantom"
    with pytest.raises(CodecError, match="SHA-256"):
        load_template(path, sha256="0" * 64)
    (tmp_path / "bad.safetensors").write_bytes(b"not a template")
    with pytest.raises(CodecError, match="not a template"):
        load_template(tmp_path / "bad.safetensors")


def test_fixed_point_inverse_undoes_the_decoders_field():
    """The encoder's inverse must match the field the decoder evaluates, far closer than an
    untrained backward network (which only knows the affine)."""
    from dstdformat.model.warp import inverse_field

    torch.manual_seed(0)
    affine = AffineMap((0.02, -0.01, 0.03))
    with torch.no_grad():
        affine.linear.copy_(torch.tensor([[0.1, 0.02, 0], [0, -0.05, 0.03], [0.01, 0, 0.08]]))
    deformation = CycleDeformation(affine, SirenConfig(width=16, depth=1))
    with torch.no_grad():
        deformation.forward_net.out.weight.normal_(0, 0.003)  # a few mm of non-rigid motion
    frame = VolumeFrame((30, 40, 40), (3.0, 3.0, 3.0))
    phi = CoarseField(deformation.to_template, frame)
    texture_at = texture_frame(phi, frame, affine.as_array()[:, :3])
    inverse = inverse_field(phi, texture_at, deformation.to_scan, affine.as_array()[:, :3])
    x = frame.grid()[3:27:4, 4:36:4, 4:36:4].reshape(-1, 3)
    y = phi(x)
    with torch.no_grad():
        network = CoarseField(deformation.to_scan, texture_at)
        network_mm = float((network(y) - x).norm(dim=-1).max()) * COORD_SCALE_MM
        fixed_mm = float((inverse(y) - x).norm(dim=-1).max()) * COORD_SCALE_MM
    assert network_mm > 1.0
    assert fixed_mm < 0.1


def test_cubic_convolution_is_local_and_interpolating():
    """Keys cubic: exact at voxel centres, a region's values equal that part of the whole, and a
    smooth field is followed far better than trilinear."""
    from dstdformat.model.warp import sample_cubic

    frame = VolumeFrame((12, 14, 16), (2.0, 1.0, 1.0))
    k, j, i = torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in frame.shape], indexing="ij")
    volume = torch.sin(k / 3) * torch.cos(j / 4) + 0.1 * i
    np.testing.assert_allclose(sample_cubic(volume, frame, frame.grid()), volume, atol=1e-5)
    shift = frame.step * torch.tensor([0.3, 0.45, 0.2])
    everything = sample_cubic(volume, frame, frame.grid() + shift)
    region = [slice(3, 7), slice(2, 9), slice(5, 16)]
    part = sample_cubic(volume, frame, frame.grid(region) + shift)
    assert torch.equal(part, everything[tuple(region)])
    truth = torch.sin((k + 0.3) / 3) * torch.cos((j + 0.45) / 4) + 0.1 * (i + 0.2)
    inner = (slice(2, -2),) * 3
    cubic_error = float((everything - truth)[inner].abs().max())
    linear_error = float((sample(volume, frame, frame.grid() + shift) - truth)[inner].abs().max())
    assert cubic_error < linear_error / 4
    outside = frame.grid()[:1, :1, :1] - frame.step  # one voxel before the first
    assert float(sample_cubic(volume, frame, outside, padding_value=-7.0)) == -7.0
