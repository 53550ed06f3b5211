"""The bundle's code in ``bundle/scripts`` (``scripts``) and the library's scoring: datalists, scoring,
metrics, EMA, training step."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from artasyn.scoring import AnomalyScored, anomaly_scores
from scripts.datalist import DataReport, build_datalist, check_image_file, load_datalist_json, split_validation
from scripts.ema import create_ema_model
from scripts.metrics import MicroDiceMetric, dice_output
from scripts.transforms import LoadMaskd


def _png(path: Path, value: int = 100, size: int = 32, mode: str = "L") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((size, size), value, np.uint8)
    arr[0, 0] = value - 1  # not constant: a constant image is rejected by the pre-check
    if mode == "RGB":
        arr = np.stack([arr] * 3, -1)
    Image.fromarray(arr).save(path)
    return str(path)


@pytest.fixture
def layout(tmp_path):
    """The authors' layout: 3 training images (one corrupt), 2 + 2 test images, 1 mask."""
    root = tmp_path / "data"
    for i in range(2):
        _png(root / "train" / "healthy" / f"h{i}.png")
    bad = root / "train" / "healthy" / "broken.png"
    bad.write_bytes(Image.open(_png(tmp_path / "x.png")).tobytes()[:10] + b"\x89PNG garbage")
    for i in range(2):
        _png(root / "test" / "healthy" / f"t{i}.png")
        _png(root / "test" / "diseased" / f"d{i}.png")
    _png(root / "test" / "diseased_mask" / "d0.png", value=255)
    return root


def test_datalist_reports_unreadable_files_by_path(layout, tmp_path):
    report = DataReport(tmp_path / "report.json")
    items = build_datalist(layout, "training", report=report)
    assert sorted(Path(it["image"]).name for it in items) == ["h0.png", "h1.png"]
    assert [Path(u["path"]).name for u in report.unreadable] == ["broken.png"]
    report.save()
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["n_unreadable"] == 1 and saved["unreadable"][0]["path"].endswith("broken.png")


def test_check_image_file_detects_truncation(tmp_path):
    good = _png(tmp_path / "a.png", size=64)
    assert check_image_file(good) is None
    data = Path(good).read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    assert check_image_file(tmp_path / "cut.png") is not None
    assert check_image_file(tmp_path / "missing.png") == "file not found"


def test_validation_and_test_are_disjoint_halves_of_test(layout):
    report = DataReport()
    val = build_datalist(layout, "validation", val_fraction=0.5, report=report)
    test = build_datalist(layout, "test", val_fraction=0.5, report=report)
    assert len(val) == len(test) == 2
    assert not {v["image"] for v in val} & {t["image"] for t in test}
    assert sorted(int(v["label"]) for v in val) == [0, 1]
    masked = [it for it in val + test if it["mask"]]
    assert len(masked) == 1 and Path(masked[0]["mask"]).name == "d0.png"
    assert len(report.missing_mask) == 1  # d1 has no mask: AP / AUC only


def test_split_validation_is_exact_and_interleaved():
    items = [{"image": f"{i:02d}", "label": 0} for i in range(10)]
    val, rest = split_validation(items, 0.3)
    assert len(val) == 3 and len(rest) == 7
    assert split_validation(items, 0.3) == (val, rest)


def test_datalist_json_relative_paths_and_defaults(tmp_path):
    _png(tmp_path / "img" / "a.png")
    _png(tmp_path / "img" / "b.png")
    (tmp_path / "list.json").write_text(
        json.dumps({"training": [{"image": "img/a.png"}], "test": [{"image": "img/b.png", "label": 1}]})
    )
    tr = load_datalist_json(tmp_path / "list.json", "training")
    assert tr == [{"image": str(tmp_path / "img" / "a.png"), "label": 0, "mask": ""}]
    test = build_datalist(tmp_path / "list.json", "test", val_fraction=0.0)
    assert len(test) == 1 and test[0]["label"] == 1 and test[0]["mask"] == ""


def test_load_mask_gives_same_keys_with_or_without_file(tmp_path):
    mask_path = tmp_path / "m.png"
    arr = np.zeros((16, 16), np.uint8)
    arr[4:8, 4:8] = 255
    Image.fromarray(arr).save(mask_path)
    image = torch.zeros(1, 16, 16)
    t = LoadMaskd(keys="mask")
    with_mask = t({"image": image, "mask": str(mask_path)})
    without = t({"image": image, "mask": ""})
    assert with_mask["mask"].shape == without["mask"].shape == (1, 16, 16)
    assert with_mask["mask"].sum() == 16 and without["mask"].sum() == 0
    assert with_mask["has_mask"].item() == 1.0 and without["has_mask"].item() == 0.0
    assert with_mask["mask"][0, 4, 4] == 1  # rows are the vertical axis


def test_anomaly_scores_use_each_images_own_maximum():
    image = torch.zeros(1, 8, 8)
    recon = torch.zeros(1, 8, 8)
    image[0, 0, 0] = 1.0  # error 1 at one pixel
    image[0, 1, 1] = 0.3  # error 0.3: above 0.2 * 1, below 0.4 * 1
    amap, score, masks = anomaly_scores(image, recon, taus=(0.2, 0.4))
    assert torch.allclose(score, torch.tensor([(1.0 + 0.09) / 64]))
    assert masks.shape == (2, 8, 8)
    assert masks[0].sum() == 2 and masks[1].sum() == 1
    # the floor of 0.03 applies when errors are tiny
    _, _, quiet = anomaly_scores(torch.full((1, 4, 4), 0.01), torch.zeros(1, 4, 4), taus=(0.2,))
    assert quiet.sum() == 0


def test_score_inside_lungs_option():
    image, recon = torch.zeros(1, 4, 4), torch.zeros(1, 4, 4)
    image[0, 0, 0] = 1.0
    lung = torch.zeros(1, 4, 4)
    lung[0, 2:, 2:] = 1
    _, s_all, _ = anomaly_scores(image, recon, lung=lung)
    _, s_lung, _ = anomaly_scores(image, recon, lung=lung, score_in_lungs=True)
    assert s_all.item() > 0 and s_lung.item() == 0


def test_anomaly_scored_copies_ground_truth_for_metrics():
    d = {
        "image": torch.rand(1, 8, 8),
        "pred": torch.rand(1, 8, 8),
        "mask": torch.ones(1, 8, 8),
        "has_mask": torch.tensor([1.0]),
    }
    out = AnomalyScored(taus=(0.2, 0.4, 0.6, 0.8))(d)
    assert out["pred_mask"].shape == (4, 8, 8) and out["score"].shape == (1,)
    assert out["gt_mask"] is d["mask"] and out["gt_available"].item() == 1.0


def test_micro_dice_pools_pixels_over_images():
    # image 1: perfect on 1 pixel; image 2: 0 of 3 pixels found. Micro: 2*1 / (2*1 + 0 + 3) = 0.4
    p1, g1 = torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)
    p1[..., 0, 0] = g1[..., 0, 0] = 1
    p2, g2 = torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)
    g2[..., 1, :3] = 1
    metric = MicroDiceMetric()
    metric(torch.cat([p1, p2]), torch.cat([g1, g2]))
    assert metric.aggregate().item() == pytest.approx(0.4)


def test_dice_output_leaves_out_images_without_masks():
    pm = torch.ones(2, 4, 4)
    items = [
        {
            "pred_mask": pm,
            "gt_mask": torch.ones(1, 4, 4),
            "gt_available": torch.tensor([1.0]),
            "label": torch.tensor([1.0]),
        },
        {
            "pred_mask": pm,
            "gt_mask": torch.zeros(1, 4, 4),
            "gt_available": torch.tensor([0.0]),
            "label": torch.tensor([1.0]),
        },
        {
            "pred_mask": pm,
            "gt_mask": torch.zeros(1, 4, 4),
            "gt_available": torch.tensor([1.0]),
            "label": torch.tensor([0.0]),
        },
    ]
    preds, gts = dice_output(1)(items)
    assert [p.sum().item() for p in preds] == [16, 0, 0]
    metric = MicroDiceMetric()
    metric(preds, gts)
    assert metric.aggregate().item() == pytest.approx(1.0)


def test_ema_averages_parameters_and_batchnorm_buffers():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    ema = create_ema_model(net, decay=0.5, warmup=False)
    ema.update_parameters(net)  # the first update copies
    net(torch.rand(4, 1, 8, 8) + 3)  # moves the running mean
    with torch.no_grad():
        net[0].weight.add_(1.0)
    before = ema.module[0].weight.clone()
    ema.update_parameters(net)
    assert torch.allclose(ema.module[0].weight, 0.5 * before + 0.5 * net[0].weight)
    assert torch.allclose(ema.module[1].running_mean, 0.5 * torch.zeros(2) + 0.5 * net[1].running_mean)
    assert not torch.allclose(ema.module[1].running_mean, torch.zeros(2))
    assert ema.module[1].num_batches_tracked == net[1].num_batches_tracked


@pytest.mark.parametrize("warmup", [True, False])
def test_ema_tail_is_the_equal_average_of_the_updates_from_tail_start(warmup):
    net = torch.nn.Linear(1, 1, bias=False)
    ema = create_ema_model(net, decay=0.9, warmup=warmup, tail_start=4)
    for value in range(1, 9):  # updates 1..8 with weights 1..8
        with torch.no_grad():
            net.weight.fill_(float(value))
        ema.update_parameters(net)
        if value == 3:  # before the tail: the EMA, not an average of 1..3
            assert ema.module.weight.item() != pytest.approx(2.0)
    assert ema.module.weight.item() == pytest.approx(np.mean([4, 5, 6, 7, 8]))
    with pytest.raises(ValueError, match="ema_tail_start"):
        create_ema_model(net, tail_start=-1)


def test_training_step_reduces_the_loss_on_a_fixed_batch():
    from ignite.engine import Events
    from monai.engines import SupervisedTrainer

    from artasyn.losses import ARTASynLoss
    from artasyn.networks import AnomalyUNet
    from scripts.training import ARTASynTrainingStep, TwinReconstruction

    torch.manual_seed(0)
    net = AnomalyUNet(channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_downsample=(), dropout=0.0)
    target = torch.rand(4, 1, 16, 16) * 0.5 + 0.25
    image = target.clone()
    mask = torch.zeros_like(image)
    image[1:, :, 4:8, 4:8] = 1.0
    mask[1:, :, 4:8, 4:8] = 1.0
    batch = {"image": image, "target": target, "anomaly_mask": mask}
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    trainer = SupervisedTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=[batch] * 15,
        network=TwinReconstruction(net),
        optimizer=opt,
        loss_function=ARTASynLoss(),
        iteration_update=ARTASynTrainingStep(),
        decollate=False,
    )
    losses = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output["loss"].item()))
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is fastest, and fair to a shared machine
    try:
        trainer.run()
    finally:
        torch.set_num_threads(n_threads)
    assert len(losses) == 15 and losses[-1] < losses[0]
    out = trainer.state.output
    assert {"loss_global", "loss_local", "loss_feat", "loss_dice"} <= set(out)


def test_time_limit_stops_training_and_still_completes():
    from ignite.engine import Engine, Events

    from scripts.training import TrainingTimeLimit

    engine = Engine(lambda e, b: None)
    TrainingTimeLimit(limit_sec=1e-6).attach(engine)
    completed = []
    engine.add_event_handler(Events.COMPLETED, lambda e: completed.append(e.state.iteration))
    engine.run(range(100), max_epochs=3)
    assert completed == [1]
    unlimited = Engine(lambda e, b: None)
    TrainingTimeLimit(limit_sec=0).attach(unlimited)
    unlimited.run(range(10), max_epochs=2)
    assert unlimited.state.iteration == 20


def test_lung_check_lists_images_without_lungs_and_caches_maps(tmp_path):
    from monai.data import PersistentDataset
    from monai.transforms import Compose

    from artasyn.pbtseg import PBTSegd
    from artasyn.phantom import make_phantom
    from scripts.loading import LoadChestXRayd
    from scripts.lungs import LungCheck
    from scripts.utils import stable_transform_hash

    phantom = tmp_path / "phantom.png"
    Image.fromarray(make_phantom(128, seed=0)["image"]).save(phantom)
    flat = _png(tmp_path / "flat.png", value=120, size=128)  # nothing lung-shaped in it
    data = [{"image": str(phantom)}, {"image": flat}]
    transform = Compose([LoadChestXRayd("image"), PBTSegd("image", lung_keys="lung", spatial_size=128)])
    ds = PersistentDataset(data, transform, cache_dir=tmp_path / "cache", hash_transform=stable_transform_hash)
    report = LungCheck(ds, DataReport(tmp_path / "r.json"), name="training").run()
    assert report.no_lung == [flat]
    assert json.loads((tmp_path / "r.json").read_text())["counts"]["training_no_lung"] == 1
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2  # both maps cached for training


def test_lung_cache_key_changes_with_the_code_of_the_transforms(monkeypatch, tmp_path):
    """A cache entry made by older PBTSeg code is not reused: the key holds the code's fingerprint."""
    from monai.transforms import Resized

    from artasyn.pbtseg import PBTSegd
    from scripts import utils

    pkg = tmp_path / "pkg"
    (pkg / "__pycache__").mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    before = utils.tree_fingerprint(pkg)
    (pkg / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"compiled")
    assert utils.tree_fingerprint(pkg) == before  # compiled files do not count
    (pkg / "a.py").write_text("x = 2\n")
    assert utils.tree_fingerprint(pkg) != before

    assert len(utils.package_fingerprint("artasyn")) == 32  # the installed tree's md5
    chain = [Resized("image", (64, 64)), PBTSegd("image", lung_keys="lung", spatial_size=64)]
    fingerprints = {"artasyn": "old", "monai": "1.6.1"}
    monkeypatch.setattr(utils, "package_fingerprint", lambda name: fingerprints.get(name, "?"))
    old = utils.stable_transform_hash(chain)
    assert utils.stable_transform_hash(chain) == old
    fingerprints["artasyn"] = "new"
    assert utils.stable_transform_hash(chain) != old  # PBTSeg's code changed
    assert utils.stable_transform_hash(chain[:1]) == utils.stable_transform_hash(chain[:1])
    only_monai = utils.stable_transform_hash(chain[:1])
    fingerprints["artasyn"] = "newer"
    assert utils.stable_transform_hash(chain[:1]) == only_monai  # a MONAI-only chain ignores artasyn


def _tiny_unet():
    from artasyn.networks import AnomalyUNet

    torch.manual_seed(0)
    return AnomalyUNet(channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_downsample=(), dropout=0.0)


def test_twin_reconstruction_is_one_forward_for_recon_and_both_features():
    from scripts.training import TwinReconstruction

    net = _tiny_unet().eval()
    x, target = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    recon, f_in, f_target = TwinReconstruction(net)(x, target)
    r_ref, f_ref = net.forward_with_features(x)
    assert torch.allclose(recon, r_ref) and torch.allclose(f_in, f_ref)
    assert torch.allclose(f_target, net.encode(target))
    assert TwinReconstruction(net)(x)[2] is None  # no target: the feature term is off
    with pytest.raises(TypeError, match="forward_with_features"):
        TwinReconstruction(torch.nn.Conv2d(1, 1, 3))


@pytest.mark.parametrize("ddp", [False, True])
def test_training_step_makes_one_forward_call_with_or_without_ddp(ddp, tmp_path):
    """The step calls ``network(input, target)`` once an iteration, plain or DDP-wrapped, and trains every layer."""
    import torch.distributed as dist
    from monai.engines import SupervisedTrainer

    from artasyn.losses import ARTASynLoss
    from scripts.ddp import wrap_ddp
    from scripts.training import ARTASynTrainingStep, TwinReconstruction

    net = _tiny_unet()
    if ddp:
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        train_net = wrap_ddp(net, "cpu") if ddp else TwinReconstruction(net)
        calls = []
        twin = train_net.module if ddp else train_net
        twin.register_forward_hook(lambda m, args, out: calls.append(len(args)))
        target = torch.rand(3, 1, 16, 16)
        mask = torch.zeros_like(target)
        mask[1:, :, 4:8, 4:8] = 1.0
        batch = {"image": torch.maximum(target, mask), "target": target, "anomaly_mask": mask}
        before = {k: v.detach().clone() for k, v in net.state_dict().items() if v.is_floating_point()}
        trainer = SupervisedTrainer(
            device="cpu",
            max_epochs=1,
            train_data_loader=[batch] * 2,
            network=train_net,
            optimizer=torch.optim.AdamW(net.parameters(), lr=1e-3),
            loss_function=ARTASynLoss(),
            iteration_update=ARTASynTrainingStep(),
            decollate=False,
        )
        trainer.run()
    finally:
        if ddp:
            dist.destroy_process_group()
    assert calls == [2, 2]  # one call an iteration, with (input, target)
    assert float(trainer.state.output["loss_feat"]) >= 0
    changed = [k for k, v in net.state_dict().items() if k in before and not torch.equal(v, before[k])]
    first_layer = next(iter(before))  # the encoder's first convolution: reached by every term
    assert first_layer in changed and len(changed) > len(before) // 2, changed


def test_training_step_names_the_wrapper_it_needs():
    from monai.engines import SupervisedTrainer

    from artasyn.losses import ARTASynLoss
    from scripts.training import ARTASynTrainingStep

    net = _tiny_unet()
    batch = {
        "image": torch.rand(1, 1, 16, 16),
        "target": torch.rand(1, 1, 16, 16),
        "anomaly_mask": torch.zeros(1, 1, 16, 16),
    }
    trainer = SupervisedTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=[batch],
        network=net,
        optimizer=torch.optim.AdamW(net.parameters()),
        loss_function=ARTASynLoss(),
        iteration_update=ARTASynTrainingStep(),
        decollate=False,
    )
    with pytest.raises(Exception, match="TwinReconstruction"):
        trainer.run()
