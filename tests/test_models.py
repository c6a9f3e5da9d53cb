"""The model suite of perf/models on lazy against torch: two training steps at the tiny size from the
same weights (torch's, copied across by state_dict) and the same data and random draws.

Tolerances
- Losses: rtol 1e-4. The first step's inputs and weights are bit-identical; lazy's fused kernels
  and GEMMs sum in another order than torch's (and float32 sums carry their block sums in double),
  which moves a float32 loss by a few ulps (~1e-7 relative); the second step's loss also sees the
  first update's ulps, amplified by at most the step's Lipschitz factor.
- Parameters and buffers (BatchNorm's running statistics) after the two steps: atol 1e-5 after SGD
  and Adadelta, whose updates are proportional to the gradient. Adam's update is m / sqrt(v), which
  is O(1) wherever a gradient is O(1e-9) noise, so an ulp of difference there moves the parameter
  by up to lr per step: those models (VAE, GPT, DCGAN) are compared within 2 lr + 1e-5.
"""

import numpy as np
import pytest
import torch

import lazy
from perf import models

# model -> the largest learning rate of an Adam-family optimizer it uses (0: none)
ADAM_LR = {"mnist": 0.0, "resnet18": 0.0, "gpt2": 6e-4, "vae": 1e-3, "dcgan": 2e-4}


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().numpy()
    return x.numpy()


def _losses(out) -> list[np.ndarray]:
    return [_np(o) for o in (out if isinstance(out, tuple) else (out,))]


def _pair(name: str):
    t = models.build(name, torch, "tiny")
    lz = models.build(name, lazy, "tiny")
    models.copy_weights(t, lz)
    return t, lz


@pytest.mark.parametrize("name", list(models.MODELS))
def test_two_training_steps_then_inference_match_torch(name):
    t, lz = _pair(name)
    for step in range(2):
        torch.manual_seed(100 + step)  # dropout masks and noise: the same draws in both
        lazy.manual_seed(100 + step)
        got = _losses(lz.train_step(*lz.batch))
        want = _losses(t.train_step(*t.batch))
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-4, err_msg=f"{name}: loss of step {step}")
    atol = 1e-5 + 2 * ADAM_LR[name]
    for key, module in t.modules.items():
        want = module.state_dict()
        got = lz.modules[key].state_dict()
        assert list(got) == list(want)
        for pname, w in want.items():
            np.testing.assert_allclose(_np(got[pname]), _np(w), rtol=1e-4, atol=atol,
                                       err_msg=f"{name}: {key}.{pname} after two steps")
    # inference (eval mode: BatchNorm's running statistics, no dropout) from the trained weights,
    # loaded again so that the two libraries start it from the same values
    models.copy_weights(t, lz)
    torch.manual_seed(3)
    lazy.manual_seed(3)
    got, want = _losses(lz.infer(*lz.batch)), _losses(t.infer(*t.batch))
    for g, w in zip(got, want, strict=True):
        if g.dtype.kind in "iu":  # argmax of near-tied logits may differ: the losses pin the values
            assert g.shape == w.shape
        else:
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=f"{name}: inference")


def test_generate_top_k_sampling_gives_valid_tokens_reproducibly():
    gpt = models.build("gpt2", lazy, "tiny")
    cfg, generate = gpt.extra["config"], gpt.extra["generate"]
    # a prompt near block_size: the context grows to it, then is cropped (each length is a program)
    idx = lazy.zeros((2, cfg.block_size - 2), dtype=lazy.long)
    runs = []
    for _ in range(2):
        lazy.manual_seed(11)
        out = generate(idx, 4, temperature=0.8, top_k=5).numpy()
        assert out.shape == (2, cfg.block_size + 2) and out.dtype == np.int64
        assert ((out >= 0) & (out < cfg.vocab_size)).all() and not out[:, :-4].any()
        runs.append(out)
    np.testing.assert_array_equal(runs[0], runs[1])


def test_generate_greedy_matches_torch():
    t, lz = _pair("gpt2")
    start = np.random.default_rng(1).integers(0, t.extra["config"].vocab_size, (2, t.extra["config"].block_size - 1))
    got = lz.extra["generate"](lazy.tensor(start), 3, top_k=1).numpy()
    want = t.extra["generate"](torch.tensor(start), 3, top_k=1).numpy()
    np.testing.assert_array_equal(got, want)


def test_models_run_on_torch_from_the_same_file():
    # the files are plain torch programs: nothing of lazy's is reached when torch is handed in
    case = models.build("mnist", torch, "tiny")
    assert all(isinstance(m, torch.nn.Module) for m in case.modules.values())
    assert isinstance(case.train_step(*case.batch), torch.Tensor)
    with pytest.raises(ValueError, match="model size"):
        models.build("mnist", torch, "huge")
