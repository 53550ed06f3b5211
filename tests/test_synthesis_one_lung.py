"""ART-ASyn synthesis (ALGORITHM.md section 2) when the lung map holds one lung only: the
anomalies go into that lung (the paper's rule draws the segments of each lung that has pixels),
for the single-image transform and for the twins the bundle trains on. Real image:
``covidquex_normal_lung/Normal (10234).png`` with its paper PBTSeg map, one lung removed."""

import numpy as np
import pytest
from PIL import Image

from artasyn.pbtseg import PBTSeg
from artasyn.synthesis import RandARTAnomalyd, RandARTTwinsd


@pytest.fixture(scope="module")
def image_and_lungs(shared_data):
    img = np.asarray(Image.open(shared_data / "covidquex_normal_lung" / "images" / "Normal (10234).png").convert("L"))
    lung = PBTSeg()(img[None])
    assert set(np.unique(lung).tolist()) == {0, 1, 2}
    return img[None].astype(np.float32), lung


@pytest.mark.parametrize("variant", ["final", "base"])
@pytest.mark.parametrize("kept", [1, 2])
def test_one_lung_gets_anomalies_inside_it(image_and_lungs, variant, kept):
    img, lung = image_and_lungs
    one = np.where(lung == kept, lung, 0).astype(np.uint8)
    t = RandARTAnomalyd(keys="image", lung_key="lung", variant=variant)
    for seed in range(5):
        out = t.set_random_state(seed)({"image": img, "lung": one})
        mask = np.asarray(out["anomaly_mask"])[0] > 0
        assert not t.synth.last_no_lung and int(np.asarray(out["anomaly_label"]).max()) == 1
        assert mask.sum() > 0
        # nearly all of the mask lies in the kept lung (the soft lung mask is dilated and smoothed)
        assert (mask & (one[0] > 0)).sum() >= 0.7 * mask.sum()
        assert (mask & (lung[0] == 3 - kept)).sum() == 0


def test_one_lung_twins_are_all_anomalous(image_and_lungs):
    img, lung = image_and_lungs
    one = np.where(lung == 1, lung, 0).astype(np.uint8)
    twins = RandARTTwinsd(keys="image", lung_key="lung", num_twins=3, include_healthy=False).set_random_state(0)
    out = twins({"image": img, "lung": one})
    assert len(out) == 3
    for item in out:
        mask = np.asarray(item["anomaly_mask"])[0] > 0
        assert int(np.asarray(item["anomaly_label"]).max()) == 1 and (mask & (one[0] == 1)).sum() > 0
