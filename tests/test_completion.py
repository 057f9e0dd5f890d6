"""Measures of a completion: hidden-pixel MSE/PSNR, SSIM on the hidden region, and class consistency
from the cached classifier; each checked against a case whose answer is known, and every bad input."""

import math

import pytest
import torch

from vqtto import cache as artifacts
from vqtto.tasks import completion as cm


def _images(b=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.avg_pool2d(torch.rand(b, 1, 28, 28, generator=gen), 3, 1, 1)  # some structure
    return base, gen


def _bottom(b=3):
    m = torch.zeros(b, 1, 28, 28, dtype=torch.bool)
    m[..., 14:, :] = True
    return m


# --- pixel measures -------------------------------------------------------------------------------

def test_hidden_mse_and_psnr_only_see_the_hidden_pixels():
    truth, _ = _images()
    hidden = _bottom()
    answer = truth.clone()
    answer[..., :14, :] = 1 - answer[..., :14, :]  # wrong where visible: ignored
    answer[0, :, 14:, :] += 0.1
    mse = cm.hidden_mse(answer, truth, hidden)
    assert torch.allclose(mse, torch.tensor([0.01, 0.0, 0.0]), atol=1e-6)
    assert math.isclose(float(cm.hidden_psnr(answer, truth, hidden)[0]), 20.0, abs_tol=1e-3)


def test_ssim_of_an_image_with_itself_is_one_and_falls_with_noise():
    truth, gen = _images()
    assert torch.allclose(cm.ssim_map(truth, truth), torch.ones_like(truth), atol=1e-5)
    hidden = _bottom()
    assert torch.allclose(cm.hidden_ssim(truth, truth, hidden), torch.ones(3), atol=1e-5)
    noise = torch.randn(truth.shape, generator=gen)
    scores = [cm.hidden_ssim((truth + s * noise).clamp(0, 1), truth, hidden) for s in (0.02, 0.1, 0.3)]
    assert bool((scores[0] < 1 - 1e-3).all())
    assert bool((scores[0] > scores[1]).all()) and bool((scores[1] > scores[2]).all())


def test_ssim_punishes_blur_that_the_mse_forgives():
    """A flat grey answer at the truth's mean has a small MSE but no structure: SSIM near 0."""
    truth, gen = _images()
    hidden = _bottom()
    flat = truth.mean((2, 3), keepdim=True).expand_as(truth).clone()
    noisy = (truth + 0.15 * torch.randn(truth.shape, generator=gen)).clamp(0, 1)
    assert bool((cm.hidden_mse(noisy, truth, hidden) > cm.hidden_mse(flat, truth, hidden)).all())
    assert bool((cm.hidden_ssim(noisy, truth, hidden) > cm.hidden_ssim(flat, truth, hidden)).all())
    assert bool((cm.hidden_ssim(flat, truth, hidden).abs() < 0.2).all())


def test_ssim_only_averages_the_hidden_pixels():
    truth, _ = _images()
    answer = truth.clone()
    answer[..., :8, :] = 0.0  # far from the hidden rows (more than the window's reach)
    assert torch.allclose(cm.hidden_ssim(answer, truth, _bottom()), torch.ones(3), atol=1e-5)


def test_pixel_measures_refuse_bad_input():
    truth, _ = _images()
    hidden = _bottom()
    with pytest.raises(ValueError, match=r"images must have the truth's shape \(3, 1, 28, 28\)"):
        cm.hidden_mse(truth[:2], truth, hidden)
    with pytest.raises(ValueError, match="images must be a float"):
        cm.hidden_mse((truth * 255).long(), truth, hidden)
    with pytest.raises(ValueError, match=r"hidden must be a bool mask \(3, 1, 28, 28\)"):
        cm.hidden_ssim(truth, truth, hidden.float())
    with pytest.raises(ValueError, match="hide at least one pixel of every image"):
        cm.hidden_mse(truth, truth, torch.zeros_like(hidden))
    with pytest.raises(ValueError, match=r"window must be an odd integer in \[3, 28\]"):
        cm.ssim_map(truth, truth, window=4)
    with pytest.raises(ValueError, match="sigma must be a finite number > 0"):
        cm.ssim_map(truth, truth, sigma=0)


# --- the classifier -------------------------------------------------------------------------------

def test_class_consistency_reads_the_classifier():
    model = cm.Classifier(cm.ClassifierConfig(channels=2, hidden=4))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.net[-1].bias[3] = math.log(9 * 4.0)  # class 3 has probability 4/5 whatever the image
    images = torch.rand(4, 1, 28, 28)
    agree, conf = cm.class_consistency(model, images, torch.tensor([3, 0, 3, 9]))
    assert agree.tolist() == [True, False, True, False]
    assert torch.allclose(conf, torch.full((4,), 0.8))


def test_class_consistency_refuses_bad_input():
    model = cm.Classifier(cm.ClassifierConfig(channels=2, hidden=4))
    images = torch.rand(2, 1, 28, 28)
    with pytest.raises(ValueError, match=r"labels must be \(2,\) int64"):
        cm.class_consistency(model, images, torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\), got values in \[1, 10\]"):
        cm.class_consistency(model, images, torch.tensor([1, 10]))
    with pytest.raises(ValueError, match=r"images must be \(B, 1, 28, 28\)"):
        cm.class_consistency(model, torch.rand(2, 3, 28, 28), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="clf must be a TrainedClassifier or Classifier"):
        cm.class_consistency(torch.nn.Linear(2, 2), images, torch.tensor([1, 2]))


def test_classifier_config_refuses_bad_values():
    with pytest.raises(ValueError, match="channels must be an integer >= 1, got 0"):
        cm.ClassifierConfig(channels=0)
    with pytest.raises(ValueError, match="divisible by 4"):
        cm.ClassifierConfig(height=30)
    with pytest.raises(ValueError, match="unknown classifier option 'depth'"):
        cm.classifier_config("fashion-mnist", "smoke", depth=2)
    with pytest.raises(ValueError, match="dataset must be 'fashion-mnist'"):
        cm.classifier_config("cifar10", "smoke")
    with pytest.raises(ValueError, match="train_limit must be an integer >= 1 or None, got 0"):
        cm.ClassifierTrainConfig(train_limit=0)


def test_classifier_cache_round_trip(monkeypatch):
    options = {"channels": 2, "hidden": 8, "train_limit": 256, "test_limit": 64, "epochs": 1, "seed": 5}
    first = cm.classifier("fashion-mnist", "smoke", device="cpu", progress=False, **options)
    assert artifacts.path_for("classifier", first.config).exists()
    assert 0.0 <= first.test["accuracy"] <= 1.0 and len(first.history.test_accuracy) == len(first.history.step)

    def no_training(*args, **kwargs):
        raise AssertionError("the cached classifier was trained again")

    monkeypatch.setattr(cm, "fit", no_training)
    again = cm.classifier("fashion-mnist", "smoke", device="cpu", progress=False, **options)
    assert again.test == first.test and again.config == first.config
    for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)
