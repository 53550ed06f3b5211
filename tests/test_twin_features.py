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


def _bf16_trainer(net, n_batches: int = 1):
    from monai.engines import SupervisedTrainer

    from artasyn.losses import ARTASynLoss
    from scripts.training import ARTASynTrainingStep, TwinReconstruction

    inputs, target = _batch()
    batch = {"image": inputs, "target": target, "anomaly_mask": (inputs != target).float()}
    return SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=[batch] * n_batches,
        network=TwinReconstruction(net),
        optimizer=torch.optim.AdamW(net.parameters(), lr=1e-3),
        loss_function=ARTASynLoss(),
        iteration_update=ARTASynTrainingStep(cpu_bf16=True),
        decollate=False,
    )


def test_cpu_bf16_step_trains(monkeypatch):
    """``ARTASynTrainingStep(cpu_bf16=True)`` on a CPU with native bfloat16: the forward runs in
    bfloat16, the loss is finite and the weights stay float32."""
    import scripts.training

    monkeypatch.setattr(scripts.training, "cpu_has_native_bf16", lambda: True)
    net = _net()
    trainer = _bf16_trainer(net)
    trainer.run()
    assert trainer.state.output["pred"].dtype == torch.bfloat16
    loss = trainer.state.output["loss"]
    assert torch.isfinite(loss) and all(p.dtype == torch.float32 for p in net.parameters())


def test_cpu_bf16_falls_back_to_float32_without_native_support(monkeypatch, caplog):
    """Where the CPU has no native bfloat16 (AVX2-only x86), ``cpu_bf16`` trains in float32 and
    says so once, not once per step."""
    import scripts.training

    probes = []
    monkeypatch.setattr(scripts.training, "cpu_has_native_bf16", lambda: probes.append(1) or False)
    net = _net()
    trainer = _bf16_trainer(net, n_batches=3)
    with caplog.at_level("WARNING", logger="artasyn.bundle"):
        trainer.run()
    assert trainer.state.iteration == 3
    assert trainer.state.output["pred"].dtype == torch.float32
    assert torch.isfinite(trainer.state.output["loss"])
    warnings = [r for r in caplog.records if "no native bfloat16" in r.getMessage()]
    assert len(warnings) == 1 and len(probes) == 1


def test_cpu_has_native_bf16_answers_a_bool():
    from scripts.training import cpu_has_native_bf16

    assert isinstance(cpu_has_native_bf16(), bool)
