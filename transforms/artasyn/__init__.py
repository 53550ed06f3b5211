"""ART-ASyn for MONAI: PBTSeg lung segmentation and ART-ASyn anomaly synthesis as MONAI transforms.

The folders follow the method's order (sections of ``docs/method.md``); shared helpers sit at
the top:

- :mod:`artasyn.constants` (every constant of the method, named once), :mod:`artasyn.base`
  (what the steps share: LA layers, size scaling, conversions, input checks) and
  :mod:`artasyn.intensity` (input helpers: grayscale, 0..255 range, smoothing).
- :mod:`artasyn.lungs`: finding the lungs without labels, PBTSeg (section 1): the paper's
  thresholding, the robust mode, resizing, and the MONAI transforms.
- :mod:`artasyn.synthesis`: painting anomalies, ART-ASyn (section 2): brush, strokes, effects
  (T_blur, T_cryst), anatomy (T_rib), compositing, and the whole chain.
- :mod:`artasyn.baselines`: the syntheses ART-ASyn is compared with (AnatPaste, CutPaste,
  Perlin), by name (``variant``).
- :mod:`artasyn.model`: the reconstruction network and the eq.-1 loss (section 3).
- :mod:`artasyn.scoring`: anomaly map, image score, masks per tau, decision thresholds
  calibrated on validation images (section 4), and the network's input at scoring time.
- :mod:`artasyn.phantom`: procedural chest X-ray phantoms (the embedded data set).

Users import from the package (``from artasyn import PBTSegd``). The module paths of the flat
layout of 0.1 (``artasyn.pbtseg``, ``artasyn.networks``, ...) still import, as aliases of the
modules' new places (:data:`MOVED_MODULES`).

Example (a phantom, its PBTSeg lungs, one A_final anomaly)::

    >>> from monai.transforms import Compose
    >>> from artasyn import PBTSegd, RandARTAnomalyd, make_phantom
    >>> synthesize = Compose([PBTSegd("image", lung_keys="lung"), RandARTAnomalyd("image", lung_key="lung")])
    >>> _ = synthesize.set_random_state(seed=0)
    >>> out = synthesize({"image": make_phantom(size=256, seed=1)["image"][None]})
    >>> out["image"].shape, sorted(set(out["lung"].ravel().tolist())), float(out["anomaly_label"][0])
    ((1, 256, 256), [0, 1, 2], 1.0)
"""

__version__ = "0.1.0"

import importlib
import sys

from . import base, constants  # noqa: E402
from .baselines import BASELINES  # noqa: E402
from .baselines.anatpaste import RandAnatPaste, RandAnatPasted  # noqa: E402
from .baselines.cutpaste import RandCutPaste, RandCutPasted  # noqa: E402
from .baselines.perlin import RandPerlinAnomaly, RandPerlinAnomalyd  # noqa: E402
from .intensity import (  # noqa: E402
    PercentileStretch,
    PercentileStretchD,
    PercentileStretchd,
    PercentileStretchDict,
    ReflectGaussianSmooth,
    ReflectGaussianSmoothD,
    ReflectGaussianSmoothd,
    ReflectGaussianSmoothDict,
    ScaleTo8Bit,
    ScaleTo8BitD,
    ScaleTo8Bitd,
    ScaleTo8BitDict,
    ToGrayscale,
    ToGrayscaleD,
    ToGrayscaled,
    ToGrayscaleDict,
    reflect_gaussian_smooth,
)
from .lungs import PBTSeg, PBTSegD, PBTSegd, PBTSegDict, brighten_border, pbtseg_lungs, robust_lungs  # noqa: E402
from .model import (  # noqa: E402
    AnomalyUNet,
    ARTASynLoss,
    FeatureConsistencyLoss,
    GlobalReconstructionLoss,
    LocalReconstructionLoss,
    SoftDiceAnomalyLoss,
)
from .phantom import generate_phantom_dataset, make_phantom  # noqa: E402
from .scoring import (  # noqa: E402
    AnomalyDecisiond,
    AnomalyScored,
    SmoothedInputInferer,
    anomaly_map,
    anomaly_masks,
    anomaly_scores,
    calibrate_thresholds,
    image_score,
)
from .synthesis import (  # noqa: E402
    ComposeAnomalyLayers,
    ComposeAnomalyLayersd,
    CompositeAnomaly,
    CompositeAnomalyd,
    LayerGaussianBlur,
    LayerGaussianBlurd,
    RandARTAnomaly,
    RandARTAnomalyd,
    RandARTTwinsd,
    RandBrushAnomaly,
    RandBrushAnomalyd,
    RandCrystallize,
    RandCrystallized,
    RibIntensityScale,
    RibIntensityScaled,
    StampBank,
    load_brush_texture,
    make_brush_texture,
)

#: the flat layout's module names (0.1) and the modules they are now: ``import artasyn.pbtseg``
#: and ``from artasyn.networks import AnomalyUNet`` keep working
MOVED_MODULES = {
    "pbtseg": "lungs.pbtseg",
    "pbtseg_robust": "lungs.robust",
    "brush": "synthesis.brush",
    "strokes": "synthesis.strokes",
    "effects": "synthesis.effects",
    "anatomy": "synthesis.anatomy",
    "composite": "synthesis.composite",
    "anatpaste": "baselines.anatpaste",
    "cutpaste": "baselines.cutpaste",
    "perlin": "baselines.perlin",
    "baseline_base": "baselines.common",
    "networks": "model.networks",
    "losses": "model.losses",
    "thresholds": "scoring.thresholds",
}
for _old, _new in MOVED_MODULES.items():
    globals()[_old] = sys.modules[f"{__name__}.{_old}"] = importlib.import_module(f".{_new}", __name__)
del _old, _new
