"""Training the refinement network: resumable, learns, exports a usable model; the network itself."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import dstdformat
from dstdformat.codecs.deepstd import DeepSTDVolumeCodec
from dstdformat.model.refine import Refiner, RefinerConfig
from dstdformat.training.refiner import RefinerTrainConfig, export_model, ssim_3d, train_refiner
from dstdformat.zoo.registry import MODEL_PATH_ENV, file_sha256

TINY = {"channels": 8, "blocks": 1}


def _volumes():
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[0:24, 0:48, 0:48]
    smooth = 300 * np.sin(x / 5.0) * np.cos(y / 7.0) + 40 * np.sin(z / 3.0)
    return [(smooth + rng.normal(0, 30, smooth.shape)).astype(np.float32)]


def _config(out, steps, **kw):
    return RefinerTrainConfig(
        sources=[],
        out=str(out),
        steps=steps,
        batch_size=2,
        crop=(12, 16, 16),
        ratios=(64.0,),
        checkpoint_every=2,
        model=TINY,
        **kw,
    )


def test_resumed_training_equals_uninterrupted(tmp_path):
    train_refiner(_config(tmp_path / "a", 4), volumes=_volumes())
    train_refiner(_config(tmp_path / "b", 2), volumes=_volumes())
    train_refiner(_config(tmp_path / "b", 4), volumes=_volumes())
    a = load_file(str(tmp_path / "a" / "checkpoint.safetensors"))
    b = load_file(str(tmp_path / "b" / "checkpoint.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    with pytest.raises(ValueError, match="different model"):
        train_refiner(
            RefinerTrainConfig(
                **{**_config(tmp_path / "b", 6).__dict__, "model": {"channels": 4, "blocks": 1}}
            ),
            volumes=_volumes(),
        )


def test_training_lowers_the_error_and_exports_a_model(tmp_path, monkeypatch):
    # On SPERR pairs, where the learned layer pays (on AV1 pairs it gains <1%: MODEL_CARD.md).
    config = _config(tmp_path / "run", 60, learning_rate=3e-3, base="sperr")
    config.checkpoint_every = 30
    train_refiner(config, volumes=_volumes())
    history = json.loads((tmp_path / "run" / "checkpoint.json").read_text())["history"]
    assert history[-1]["train_mae_hu"] < history[0]["train_mae_hu"]
    weights = export_model(tmp_path / "run", "tiny-refiner", tmp_path / "models")
    description = json.loads(weights.with_suffix(".json").read_text())
    assert description["id"] == "tiny-refiner" and description["architecture"] == TINY
    assert description["sha256"] == file_sha256(weights)
    assert "out" not in description["training"]["config"]
    monkeypatch.setenv(MODEL_PATH_ENV, str(tmp_path / "models"))
    path = tmp_path / "v.dstd"
    volume = _volumes()[0].astype(np.int16)
    dstdformat.save(volume, path, codec=DeepSTDVolumeCodec(ratio=12, model="tiny-refiner"))
    assert dstdformat.open(path).header["codec"]["model"]["id"] == "tiny-refiner"
    assert dstdformat.open(path).read().shape == volume.shape


def test_refiner_starts_as_the_identity_and_batches_like_single_calls():
    refiner = Refiner(RefinerConfig(channels=8, blocks=2)).eval()
    hu = np.random.default_rng(1).normal(0, 200, (9, 13, 11))
    rate = np.zeros_like(hu)
    np.testing.assert_allclose(refiner.refine(hu, rate), hu, atol=1e-3)
    with torch.no_grad():
        refiner.tail.weight.normal_(0, 0.1)
    one = [refiner.refine(hu + k, rate) for k in range(3)]
    many = refiner.refine_many([(hu + k, rate) for k in range(3)])
    for a, b in zip(one, many):
        np.testing.assert_allclose(a, b, atol=1e-3)
    assert refiner.halo == 2 * (2 + 2 * 2)


def test_ssim_loss_matches_the_metric_roughly():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 100, (24, 32, 32)).cumsum(0) / 5
    b = a + rng.normal(0, 30, a.shape)
    t = lambda v: torch.from_numpy(v.astype(np.float32) / 1000)[None, None]  # noqa: E731
    assert abs(float(ssim_3d(t(a), t(b))) - dstdformat.metrics.ssim(a, b)) < 0.02
    assert float(ssim_3d(t(a), t(a))) == pytest.approx(1.0, abs=1e-5)


def test_fine_tuning_with_distillation_starts_from_the_teacher_and_stays_near_it(tmp_path, test_model):
    """Limited-data mode: the network starts as the given model; the distillation term keeps it
    nearer to that model than the same fine-tuning without it."""
    from dstdformat.training.refiner import load_refiner_model

    teacher = load_refiner_model("test-refiner", torch.device("cpu"))
    start = _config(tmp_path / "zero", 1, init_from="test-refiner", learning_rate=0.0)
    train_refiner(start, volumes=_volumes())  # a step that moves nothing: the starting weights
    runs = {}
    for name, weight in (("free", 0.0), ("distilled", 5.0)):
        config = _config(
            tmp_path / name,
            12,
            init_from="test-refiner",
            teacher="test-refiner",
            teacher_weight=weight,
            augment="strong",
            learning_rate=3e-3,
        )
        train_refiner(config, volumes=_volumes())
        runs[name] = load_file(str(tmp_path / name / "checkpoint.safetensors"))
    recorded = json.loads((tmp_path / "free" / "checkpoint.json").read_text())["train_config"]
    assert recorded["model"] == {"channels": 8, "blocks": 1} and recorded["augment"] == "strong"
    reference = teacher.state_dict()
    start_state = load_file(str(tmp_path / "zero" / "checkpoint.safetensors"))
    assert all(torch.equal(start_state[f"model.{k}"], v) for k, v in reference.items())
    # Distance to the teacher's output on crops of the training data.
    x = torch.from_numpy(_volumes()[0][None, None, :12, :16, :16] / 1000.0)
    rates = torch.zeros_like(x)
    with torch.no_grad():
        target = teacher(x, rates)
        distance = {}
        for name, state in runs.items():
            student = Refiner(RefinerConfig(channels=8, blocks=1))
            student.load_state_dict(
                {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
            )
            distance[name] = float((student(x, rates) - target).abs().mean())
    assert 0 < distance["distilled"] < distance["free"]
    with pytest.raises(ValueError, match="teacher_weight needs a teacher"):
        train_refiner(_config(tmp_path / "bad", 1, teacher_weight=1.0), volumes=_volumes())


def test_strong_augmentation_flips_every_axis_and_transposes():
    from dstdformat.training.pairs import CodedVolume, PairSampler

    volume = np.arange(8 * 8 * 8, dtype=np.float32).reshape(8, 8, 8)
    coded = [CodedVolume(volume, volume.copy(), 0.0, 64.0)]
    seen = set()
    sampler = PairSampler(coded, (8, 8, 8), np.random.default_rng(0), augment="strong")
    for _ in range(200):
        x, y, _ = sampler.sample(1)
        assert torch.equal(x, y)  # the pair stays aligned
        crop = x[0, 0].numpy() * 1000.0
        seen.add(tuple(np.round(crop[0, 0, :2]).astype(int)) + tuple(np.round(crop[0, :2, 0]).astype(int)))
    assert len(seen) == 16  # 2 x 2 x 2 flips x 2 transpositions, each a different corner view
    with pytest.raises(ValueError, match="augment"):
        PairSampler(coded, (8, 8, 8), np.random.default_rng(0), augment="rotate")


def test_distributed_training_on_two_cpu_processes(tmp_path):
    """DistributedDataParallel with gloo (a file rendezvous): two ranks step together (their weights are
    checked equal at every checkpoint), rank 0 writes the checkpoint, and the run resumes."""
    config = _config(tmp_path / "ddp", 4, world_size=2)
    last = train_refiner(config, volumes=_volumes())
    assert last["step"] == 4 and last["world_size"] == 2
    meta = json.loads((tmp_path / "ddp" / "checkpoint.json").read_text())
    assert [h["step"] for h in meta["history"]] == [2, 4] and "world_size" not in meta["train_config"]
    resumed = train_refiner(_config(tmp_path / "ddp", 6, world_size=2), volumes=_volumes())
    assert resumed["step"] == 6
    single = load_file(str(tmp_path / "ddp" / "checkpoint.safetensors"))
    assert all(torch.isfinite(t).all() for t in single.values())


def test_av1_training_pairs_are_what_the_codec_decodes():
    from dstdformat.model.refine import rate_code
    from dstdformat.training.pairs import code_volume

    hu = _volumes()[0]
    coded = code_volume(hu, 64.0, (64, 512, 512), base="av1")
    clipped = np.clip(hu, -1024, 3071)
    error = np.abs(coded.decoded - clipped).mean()
    assert 0 < error < np.abs(clipped - clipped.mean()).mean() / 2
    # The texture's real rate: at most the file's budget (headers take their share of a tiny one).
    assert rate_code(16 / 64) <= coded.rate < rate_code(16 / 1024)
    with pytest.raises(ValueError, match="base must be"):
        code_volume(hu, 64.0, (64, 512, 512), base="h264")
