"""TwinReconstruction reuses the healthy rows' features as the twins' target features."""

from __future__ import annotations

import torch


def _net():
    from artasyn.networks import AnomalyUNet

    torch.manual_seed(0)
    return AnomalyUNet(channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_downsample=(), dropout=0.0)


def _batch():
    torch.manual_seed(1)
    h0, h1, h2 = torch.rand(3, 1, 1, 16, 16)
    twin = lambda h: (h + 0.2).clamp(0, 1)  # noqa: E731
    inputs = torch.cat([h0, twin(h0), twin(h0), h1, twin(h1), twin(h2)])  # h2: a twin without its healthy row
    target = torch.cat([h0, h0, h0, h1, h1, h2])
    return inputs, target


def test_healthy_rows():
    from scripts.training import healthy_rows

    inputs, target = _batch()
    assert healthy_rows(inputs, target).tolist() == [0, 0, 0, 3, 3, -1]
    assert healthy_rows(inputs[1:3], target[1:3]).tolist() == [-1, -1]


def test_reused_features_equal_a_separate_encoder_pass():
    """In eval mode (no dropout, fixed batch-norm statistics) both ways give the same features."""
    from scripts.training import TwinReconstruction

    net = _net().eval()
    inputs, target = _batch()
    recon, f_in, f_t = TwinReconstruction(net)(inputs, target)
    _, _, f_ref = TwinReconstruction(net, reuse_healthy_features=False)(inputs, target)
    assert torch.allclose(f_t, f_ref, atol=1e-5)
    assert torch.equal(f_t[1], f_in[0]) and torch.equal(f_t[4], f_in[3])


def test_gradients_flow_through_reused_features():
    from scripts.training import TwinReconstruction

    net = _net().train()
    inputs, target = _batch()
    _, f_in, f_t = TwinReconstruction(net)(inputs, target)
    (1 - torch.nn.functional.cosine_similarity(f_in.flatten(1), f_t.flatten(1))).mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_cpu_bf16_step_trains():
    """``ARTASynTrainingStep(cpu_bf16=True)``: one step on a CPU, finite float32 loss, float32 weights."""
    from monai.engines import SupervisedTrainer

    from artasyn.losses import ARTASynLoss
    from scripts.training import ARTASynTrainingStep, TwinReconstruction

    net = _net()
    inputs, target = _batch()
    batch = {"image": inputs, "target": target, "anomaly_mask": (inputs != target).float()}
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=[batch],
        network=TwinReconstruction(net),
        optimizer=torch.optim.AdamW(net.parameters(), lr=1e-3),
        loss_function=ARTASynLoss(),
        iteration_update=ARTASynTrainingStep(cpu_bf16=True),
        decollate=False,
    )
    trainer.run()
    loss = trainer.state.output["loss"]
    assert torch.isfinite(loss) and all(p.dtype == torch.float32 for p in net.parameters())
