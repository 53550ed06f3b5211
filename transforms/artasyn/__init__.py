"""ART-ASyn for MONAI: PBTSeg lung segmentation and ART-ASyn anomaly synthesis as MONAI transforms.

Each stage of the method lives in its own module (sections of ``docs/method.md``):

- :mod:`artasyn.constants`: every constant of the method, named once.
- :mod:`artasyn.base`: what the steps share (LA layers, size scaling, conversions, input checks).
- :mod:`artasyn.intensity`: input helpers (grayscale, 0..255 range).
- :mod:`artasyn.pbtseg`: PBTSeg, progressive binary thresholding lung segmentation (section 1).
- :mod:`artasyn.pbtseg_robust`: the robust lung segmentation of ``PBTSeg(mode="robust")``.
- :mod:`artasyn.brush`, :mod:`artasyn.strokes`: the brush and the painted layer A_base (2.1).
- :mod:`artasyn.effects`: T_blur, T_cryst and the layer composition (2.2, 2.3).
- :mod:`artasyn.anatomy`: T_rib, rib-intensity and lung scaling (2.4).
- :mod:`artasyn.composite`: compositing and the anomaly mask (2.5).
- :mod:`artasyn.synthesis`: the whole chain, ``RandARTAnomaly(d)`` (2.6).
- :mod:`artasyn.anatpaste`, :mod:`artasyn.cutpaste`, :mod:`artasyn.perlin`: the baseline
  syntheses ART-ASyn is compared with, by name in :mod:`artasyn.baselines` (``variant``).
- :mod:`artasyn.networks`, :mod:`artasyn.losses`: the reconstruction network and the eq.-1 loss (3).
- :mod:`artasyn.scoring`: anomaly map, image score and masks per tau (4).
- :mod:`artasyn.thresholds`: decision thresholds calibrated on validation images: a
  normal / abnormal label and an absolute mask (4, our addition).
- :mod:`artasyn.phantom`: procedural chest X-ray phantoms (the embedded data set).

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

# detector network, losses and phantom data (docs/method.md section 3; embedded data set)
from . import base, constants  # noqa: E402
from .anatomy import RibIntensityScale, RibIntensityScaled  # noqa: E402
from .anatpaste import RandAnatPaste, RandAnatPasted  # noqa: E402  (baselines)
from .baselines import BASELINES  # noqa: E402
from .brush import StampBank, load_brush_texture, make_brush_texture  # noqa: E402  (ART-ASyn synthesis)
from .composite import CompositeAnomaly, CompositeAnomalyd  # noqa: E402
from .cutpaste import RandCutPaste, RandCutPasted  # noqa: E402
from .effects import (
    ComposeAnomalyLayers,
    ComposeAnomalyLayersd,
    LayerGaussianBlur,
    LayerGaussianBlurd,
    RandCrystallize,
    RandCrystallized,
)  # noqa: E402
from .intensity import (
    ScaleTo8Bit,
    ScaleTo8BitD,
    ScaleTo8Bitd,
    ScaleTo8BitDict,
    ToGrayscale,
    ToGrayscaleD,
    ToGrayscaled,
    ToGrayscaleDict,
)  # noqa: E402
from .losses import (
    ARTASynLoss,
    FeatureConsistencyLoss,
    GlobalReconstructionLoss,
    LocalReconstructionLoss,
    SoftDiceAnomalyLoss,
)  # noqa: E402
from .networks import AnomalyUNet  # noqa: E402
from .pbtseg import PBTSeg, PBTSegD, PBTSegd, PBTSegDict, brighten_border, pbtseg_lungs  # noqa: E402
from .pbtseg_robust import robust_lungs  # noqa: E402
from .perlin import RandPerlinAnomaly, RandPerlinAnomalyd  # noqa: E402
from .phantom import generate_phantom_dataset, make_phantom  # noqa: E402
from .scoring import AnomalyScored, anomaly_map, anomaly_masks, anomaly_scores, image_score  # noqa: E402
from .strokes import RandBrushAnomaly, RandBrushAnomalyd  # noqa: E402
from .synthesis import RandARTAnomaly, RandARTAnomalyd, RandARTTwinsd  # noqa: E402
from .thresholds import AnomalyDecisiond, calibrate_thresholds  # noqa: E402
