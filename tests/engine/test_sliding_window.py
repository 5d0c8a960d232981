"""Sliding-window machinery with fake networks whose correct output is known exactly."""

from __future__ import annotations

import itertools

import pytest
import torch

from pantherseg.engine.sliding_window import BatchTimeline, count_tiles, predict_logits, tile_origins

from fakes import EchoNetwork


@pytest.mark.parametrize("shape", [(10, 20, 30), (48, 64, 64), (50, 97, 131), (3, 5, 7)])
@pytest.mark.parametrize("batch", [1, 3])
def test_echo_network_is_reproduced_exactly(shape, batch):
    # Every tile says "tumour logit = intensity", so any Gaussian-weighted mean of overlapping tiles,
    # with any padding, must give back the intensity itself.
    data = torch.randn((1, *shape))
    logits = predict_logits(
        EchoNetwork(), data, patch_size=(16, 32, 48), num_classes=2, step_size=0.5, tile_batch_size=batch
    )
    assert logits.shape == (2, *shape) and logits.dtype == torch.float32
    torch.testing.assert_close(logits[1], data[0], atol=1e-5, rtol=1e-5)
    assert torch.all(logits[0] == 0)


def test_tiles_match_nnunet_steps_and_all_are_visited():
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    shape, patch = (50, 97, 131), (16, 32, 48)
    steps = compute_steps_for_sliding_window(shape, patch, 0.5)
    assert tile_origins(shape, patch, 0.5) == list(itertools.product(*steps))
    network = EchoNetwork()
    predict_logits(network, torch.zeros((1, *shape)), patch_size=patch, num_classes=2, tile_batch_size=4)
    assert network.tiles_seen == count_tiles(shape, patch, 0.5) == len(list(itertools.product(*steps)))


def test_images_smaller_than_the_patch_count_one_tile():
    assert count_tiles((5, 6, 7), (16, 32, 48), 0.5) == 1


def test_stopping_early_leaves_no_evidence_where_no_tile_reached():
    data = torch.full((1, 16, 32, 96), 5.0)  # tumour logit 5 everywhere a tile ran
    calls = []

    def stop_after_first(done, total):
        calls.append((done, total))
        return False

    logits = predict_logits(
        EchoNetwork(), data, patch_size=(16, 32, 32), num_classes=2, step_size=1.0, on_batch=stop_after_first
    )
    assert calls == [(1, 3)]
    torch.testing.assert_close(logits[1, :, :, :32], data[0, :, :, :32])  # the visited tile, exactly
    assert torch.all(logits[0, :, :, :32] == 0)
    # Never visited: NaN (no evidence), which the engine weighs 0, not a made-up background logit.
    assert torch.all(torch.isnan(logits[:, :, :, 32:]))


def test_mirroring_averages_flipped_passes():
    class Asymmetric(torch.nn.Module):
        def forward(self, x):
            ramp = torch.linspace(0, 1, x.shape[-1]).expand_as(x[:, :1])
            return torch.cat([torch.zeros_like(ramp), ramp], 1)

    data = torch.zeros((1, 8, 8, 16))
    plain = predict_logits(Asymmetric(), data, patch_size=(8, 8, 16), num_classes=2)
    mirrored = predict_logits(Asymmetric(), data, patch_size=(8, 8, 16), num_classes=2, mirror_axes=(2,))
    torch.testing.assert_close(plain[1, 0, 0], torch.linspace(0, 1, 16))
    torch.testing.assert_close(mirrored[1], torch.full((8, 8, 16), 0.5))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="C, z, y, x"):
        predict_logits(EchoNetwork(), torch.zeros((8, 8, 8)), patch_size=(8, 8, 8), num_classes=2)
    with pytest.raises(ValueError, match="tile_batch_size"):
        predict_logits(EchoNetwork(), torch.zeros((1, 8, 8, 8)), patch_size=(8, 8, 8), num_classes=2, tile_batch_size=0)


class StorageRecorder(EchoNetwork):
    """An echo network that remembers where each batch's memory lives."""

    def __init__(self):
        super().__init__()
        self.pointers = []

    def forward(self, x):
        self.pointers.append(x.untyped_storage().data_ptr())
        return super().forward(x)


def test_single_tiles_are_views_of_the_case_not_copies():
    data = torch.randn((1, 32, 64, 64))  # no padding needed: the padded case is the input itself
    network = StorageRecorder()
    predict_logits(network, data, patch_size=(16, 32, 32), num_classes=2)
    assert network.tiles_seen == count_tiles(data.shape[1:], (16, 32, 32), 0.5) > 1
    assert set(network.pointers) == {data.untyped_storage().data_ptr()}


def test_check_interval_calls_back_at_checks_and_after_the_last_batch():
    data = torch.randn((1, 16, 32, 96))
    calls = []
    logits = predict_logits(
        EchoNetwork(),
        data,
        patch_size=(16, 32, 32),
        num_classes=2,
        step_size=1.0,
        on_batch=lambda done, total: calls.append((done, total)),
        check_interval_s=3600,
    )
    assert calls == [(3, 3)]  # no check was due before the end; the end is always reported
    torch.testing.assert_close(logits[1], data[0])
    calls.clear()
    predict_logits(
        EchoNetwork(),
        data,
        patch_size=(16, 32, 32),
        num_classes=2,
        step_size=1.0,
        on_batch=lambda done, total: calls.append((done, total)),
        check_interval_s=0,
    )
    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_cpu_default_checks_every_batch_and_a_stop_at_a_check_keeps_what_ran():
    data = torch.full((1, 16, 32, 128), 2.0)
    seen = []

    def stop_at_second(done, total):
        seen.append(done)
        return done < 2

    logits = predict_logits(
        EchoNetwork(), data, patch_size=(16, 32, 32), num_classes=2, step_size=1.0, on_batch=stop_at_second
    )
    assert seen == [1, 2]
    torch.testing.assert_close(logits[1, :, :, :64], data[0, :, :, :64])
    assert torch.all(torch.isnan(logits[:, :, :, 64:]))


def test_timeline_marks_every_batch_on_the_cpu_clock():
    timeline = BatchTimeline(torch.device("cpu"))
    predict_logits(
        EchoNetwork(),
        torch.randn((1, 16, 32, 96)),
        patch_size=(16, 32, 32),
        num_classes=2,
        step_size=1.0,
        tile_batch_size=2,
        timeline=timeline,
    )
    assert timeline.batches == 2 and timeline.busy_s() > 0


def test_timeline_sums_batches_and_the_gaps_between_them():
    ticks = iter([0.0, 1.0, 3.0, 6.0, 6.5, 7.0])  # three batches: 1 s, 3 s, 0.5 s; gaps of 2 s and 0.5 s
    timeline = BatchTimeline(torch.device("cpu"), clock=lambda: next(ticks))
    for _ in range(6):
        timeline.mark()
    assert timeline.batches == 3
    assert timeline.busy_s() == 4.5 and timeline.idle_between_batches_s() == 2.5
