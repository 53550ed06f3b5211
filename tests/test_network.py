"""AnomalyUNet, the reconstruction network of docs/method.md section 3 (small inputs, CPU)."""

import pytest
import torch

from artasyn.networks import PAPER_CONFIG, SMALL_CONFIG, AnomalyUNet


@pytest.fixture(scope="module")
def paper_net():
    torch.manual_seed(0)
    return AnomalyUNet(**PAPER_CONFIG).eval()


@pytest.fixture
def small_net():
    torch.manual_seed(0)
    return AnomalyUNet(**SMALL_CONFIG, zero_init=False).eval()


def test_defaults_are_the_paper_network():
    assert AnomalyUNet().state_dict().keys() == AnomalyUNet(**PAPER_CONFIG).state_dict().keys()


def test_paper_network_keeps_shape_at_64(paper_net):
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        assert paper_net(x).shape == (2, 1, 64, 64)
        assert paper_net.encode(x).shape == (2, 128, 4, 4)  # 32 * 4 channels, 4 downsamplings


def test_paper_network_has_attention_at_factors_8_and_16_and_middle(paper_net):
    from artasyn.networks import AttentionBlock

    n_attn = sum(isinstance(m, AttentionBlock) for m in paper_net.modules())
    # encoder: 2 blocks at ds 8 and 2 at ds 16; middle: 1; decoder: 3 at ds 16 and 3 at ds 8
    assert n_attn == 2 + 2 + 1 + 3 + 3


def test_small_preset_at_256():
    net = AnomalyUNet(**SMALL_CONFIG).eval()
    x = torch.rand(1, 1, 256, 256)
    with torch.no_grad():
        assert net(x).shape == (1, 1, 256, 256)
        assert net.encode(x).shape == (1, 16, 64, 64)


def test_forward_with_features_equals_forward_and_encode(small_net):
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        recon, feats = small_net.forward_with_features(x)
        assert torch.allclose(recon, small_net(x), atol=1e-6)
        assert torch.allclose(feats, small_net.encode(x), atol=1e-6)
        levels = small_net.encoder_features(x)
        assert torch.equal(levels[-1], feats) and levels[0].shape[-2:] == (32, 32)
        assert [f.shape[-1] for f in levels] == sorted((f.shape[-1] for f in levels), reverse=True)


def test_rejects_size_not_multiple_of_downsampling(small_net):
    with pytest.raises(ValueError, match="multiple of 4"):
        small_net(torch.rand(1, 1, 30, 32))


def test_torchscript_round_trip_equals_eager(small_net, tmp_path):
    scripted = torch.jit.script(small_net)
    path = tmp_path / "net.ts"
    torch.jit.save(scripted, str(path))
    loaded = torch.jit.load(str(path))
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), small_net(x), atol=1e-5)
        assert torch.allclose(loaded.encode(x), small_net.encode(x), atol=1e-5)
        assert len(loaded.encoder_features(x)) == len(small_net.encoder_features(x))
        r, f = loaded.forward_with_features(x)
        assert torch.allclose(r, small_net(x), atol=1e-5) and f.shape == small_net.encode(x).shape


def test_paper_network_is_scriptable(paper_net):
    scripted = torch.jit.script(paper_net)
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(scripted(x), paper_net(x), atol=1e-5)


def test_gradients_reach_every_parameter_and_the_input(small_net):
    small_net.train()
    x = torch.rand(2, 1, 32, 32, requires_grad=True)
    recon, feats = small_net.forward_with_features(x)
    (recon.square().mean() + feats.square().mean()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    missing = [n for n, p in small_net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_zero_init_starts_at_zero_output_but_head_gets_gradient():
    net = AnomalyUNet(**SMALL_CONFIG).train()
    x = torch.rand(2, 1, 32, 32)
    out = net(x)
    assert out.abs().max() == 0  # the authors' zero-initialized output convolution
    ((out - x) ** 2).mean().backward()
    assert net.head[-1].weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"channel_mult": (1,), "attention_downsample": ()},
        {"channel_mult": (1, 2), "num_res_blocks": 3, "attention_downsample": (1, 2), "num_heads": 2},
        {"resblock_updown": False, "norm": ("group", {"num_groups": 4})},
        {"spatial_dims": 3, "channel_mult": (1, 2), "attention_downsample": (2,)},
    ],
)
def test_other_configurations_work(kwargs):
    cfg = {**SMALL_CONFIG, **kwargs}
    net = AnomalyUNet(**cfg).eval()
    shape = (1, 1) + (16,) * cfg.get("spatial_dims", 2)
    with torch.no_grad():
        assert net(torch.rand(shape)).shape == shape


def test_channels_last_gives_same_output(small_net):
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        ref = small_net(x)
        net_cl = small_net.to(memory_format=torch.channels_last)
        out = net_cl(x.to(memory_format=torch.channels_last))
    assert torch.allclose(out, ref, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA for AMP")
def test_cuda_amp_channels_last(small_net):
    net = small_net.cuda().to(memory_format=torch.channels_last)
    x = torch.rand(2, 1, 64, 64, device="cuda").to(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.float16):
        recon, feats = net.forward_with_features(x)
    assert recon.shape == x.shape and torch.isfinite(recon).all()
