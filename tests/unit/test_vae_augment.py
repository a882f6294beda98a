"""Waveform augmentation (``tasks/vae/augment.py``) and where the datasets apply it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.vae_audio import write_tones
from trainpipe_trainer.contract.job_config import AUDIO_AUGMENTATIONS, DataConfig
from trainpipe_trainer.data.dataset import EpochSampler
from trainpipe_trainer.tasks.vae.audio_data import build_audio_data
from trainpipe_trainer.tasks.vae.augment import augment_wave
from trainpipe_trainer.tasks.vae.chunk_dataset import AudioChunkDataset


def sine(n: int = 4000) -> torch.Tensor:
    return (0.5 * torch.sin(torch.arange(n) * 2 * torch.pi * 440 / 16000)).view(1, n)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_same_generator_state_same_output_and_input_untouched() -> None:
    wave = sine()
    before = wave.clone()
    first = augment_wave(wave, AUDIO_AUGMENTATIONS, gen(3))
    second = augment_wave(wave, AUDIO_AUGMENTATIONS, gen(3))
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert not torch.equal(first, augment_wave(wave, AUDIO_AUGMENTATIONS, gen(4)))
    torch.testing.assert_close(wave, before, rtol=0, atol=0)


def test_order_in_the_config_does_not_matter() -> None:
    wave = sine()
    forward = augment_wave(wave, ["gain", "noise", "mask"], gen(1))
    backward = augment_wave(wave, ["mask", "noise", "gain"], gen(1))
    torch.testing.assert_close(forward, backward, rtol=0, atol=0)


def test_gain_stays_within_six_db() -> None:
    wave = sine()
    for seed in range(20):
        ratio = float(augment_wave(wave, ["gain"], gen(seed)).abs().max() / wave.abs().max())
        assert 10 ** (-6 / 20) - 1e-6 <= ratio <= 10 ** (6 / 20) + 1e-6


def test_shift_is_a_circular_shift_of_at_most_ten_percent() -> None:
    wave = torch.arange(1000, dtype=torch.float32).view(1, -1)
    for seed in range(20):
        out = augment_wave(wave, ["shift"], gen(seed))
        offset = int(torch.nonzero(out[0] == 0)[0])
        assert min(offset, 1000 - offset) <= 100
        torch.testing.assert_close(out, torch.roll(wave, offset, dims=-1))


def test_noise_has_the_promised_snr() -> None:
    wave = sine(16000)
    for seed in range(10):
        noise = augment_wave(wave, ["noise"], gen(seed)) - wave
        snr = 10 * torch.log10(wave.pow(2).mean() / noise.pow(2).mean())
        assert 24.0 < float(snr) < 41.0


def test_mask_zeroes_one_span_of_at_most_ten_percent() -> None:
    wave = torch.ones(1, 1000)
    for seed in range(20):
        zeros = torch.nonzero(augment_wave(wave, ["mask"], gen(seed))[0] == 0).flatten()
        assert len(zeros) <= 100
        if len(zeros):
            assert int(zeros[-1] - zeros[0]) + 1 == len(zeros)


def test_unknown_names_are_refused_naming_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match="reverb.*allowed: gain, shift, noise, mask"):
        augment_wave(sine(), ["gain", "reverb"], gen(0))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("audio")
    write_tones(root, 10, seconds=1.0)
    cfg = DataConfig(source=str(root), augment=list(AUDIO_AUGMENTATIONS))
    return build_audio_data(cfg, seed=5)


def test_only_the_training_split_is_augmented(data) -> None:
    assert data.train.augment == list(AUDIO_AUGMENTATIONS)
    for dataset in (data.val, data.test):
        assert dataset.augment == []
        wave, index = dataset[(0, 3)]
        assert index == 0
        torch.testing.assert_close(wave, dataset.waves[0], rtol=0, atol=0)
    wave, _ = data.train[(0, 3)]
    assert not torch.equal(wave, data.train.waves[0])


def test_training_items_depend_only_on_seed_epoch_and_index(data) -> None:
    train = data.train
    a, _ = train[(1, 2)]
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    b, _ = train[(1, 2)]
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is left alone
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, train[(1, 3)][0])  # another epoch
    assert not torch.equal(a, train[(2, 2)][0])  # another chunk
    other_seed = AudioChunkDataset(train.waves.numpy()[:, 0], train.chunk_sources, train.chunk_samples,
                                   augment=train.augment, seed=6)
    assert not torch.equal(a, other_seed[(1, 2)][0])
    train.set_epoch(2)
    torch.testing.assert_close(train[1][0], a, rtol=0, atol=0)


def test_items_are_float32_chunks_with_their_index_through_the_epoch_sampler(data) -> None:
    sampler = EpochSampler(range(len(data.train)), epoch=4)
    loader = torch.utils.data.DataLoader(data.train, sampler=sampler, batch_size=4)
    waves, indices = next(iter(loader))
    assert waves.dtype == torch.float32 and waves.shape == (4, 1, data.chunk_samples)
    assert indices.tolist() == [0, 1, 2, 3]
    torch.testing.assert_close(waves[2], data.train[(2, 4)][0], rtol=0, atol=0)
    assert np.isfinite(waves.numpy()).all()
