"""ART-ASyn for MONAI: PBTSeg lung segmentation and ART-ASyn anomaly synthesis as MONAI transforms.

Each stage of the method lives in its own module (see ``ALGORITHM.md`` of the project):

- :mod:`artasyn.intensity`: input helpers (grayscale, 0..255 range).
- :mod:`artasyn.pbtseg`: PBTSeg, progressive binary thresholding lung segmentation (section 1).
- :mod:`artasyn.pbtseg_robust`: the robust lung segmentation of ``PBTSeg(mode="robust")``.
- :mod:`artasyn.brush`, :mod:`artasyn.strokes`: the brush and the painted layer A_base (2.1).
- :mod:`artasyn.effects`: T_blur, T_cryst and the layer composition (2.2, 2.3).
- :mod:`artasyn.anatomy`: T_rib, rib-intensity and lung scaling (2.4).
- :mod:`artasyn.composite`: compositing and the anomaly mask (2.5).
- :mod:`artasyn.synthesis`: the whole chain, ``RandARTAnomaly(d)`` (2.6).
"""

__version__ = "0.1.0"

# detector network, losses and phantom data (ALGORITHM.md section 3; embedded data set)
from .anatomy import RibIntensityScale, RibIntensityScaled  # noqa: E402
from .brush import StampBank, load_brush_texture, make_brush_texture  # noqa: E402  (ART-ASyn synthesis)
from .composite import CompositeAnomaly, CompositeAnomalyd  # noqa: E402
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
from .phantom import generate_phantom_dataset, make_phantom  # noqa: E402
from .strokes import RandBrushAnomaly, RandBrushAnomalyd  # noqa: E402
from .synthesis import RandARTAnomaly, RandARTAnomalyd, RandARTTwinsd  # noqa: E402
