"""Painting anomalies: ART-ASyn, step by step (``docs/method.md`` section 2).

In the order the method runs them:

- :mod:`artasyn.synthesis.brush`: the brush texture and its jittered stamps (2.1).
- :mod:`artasyn.synthesis.strokes`: Bezier strokes in the lungs, the layer A_base (2.1).
- :mod:`artasyn.synthesis.effects`: T_blur, T_cryst and the layer composition (2.2, 2.3).
- :mod:`artasyn.synthesis.anatomy`: T_rib, rib-intensity and soft-lung scaling (2.4).
- :mod:`artasyn.synthesis.composite`: compositing over the image and the anomaly mask (2.5).
- :mod:`artasyn.synthesis.art`: the whole chain and its ablation variants,
  :class:`RandARTAnomaly`, :class:`RandARTAnomalyd`, :class:`RandARTTwinsd` (2.6).

Example::

    >>> from artasyn.synthesis import VARIANTS
    >>> VARIANTS
    ('base', 'base_blur_cryst', 'final')
"""

from .anatomy import RibIntensityScale, RibIntensityScaled
from .art import (
    VARIANTS,
    RandARTAnomaly,
    RandARTAnomalyD,
    RandARTAnomalyd,
    RandARTAnomalyDict,
    RandARTTwinsD,
    RandARTTwinsd,
    RandARTTwinsDict,
)
from .brush import StampBank, load_brush_texture, make_brush_texture
from .composite import CompositeAnomaly, CompositeAnomalyd
from .effects import (
    ComposeAnomalyLayers,
    ComposeAnomalyLayersd,
    LayerGaussianBlur,
    LayerGaussianBlurd,
    RandCrystallize,
    RandCrystallized,
)
from .strokes import RandBrushAnomaly, RandBrushAnomalyd

__all__ = [
    "VARIANTS",
    "ComposeAnomalyLayers",
    "ComposeAnomalyLayersd",
    "CompositeAnomaly",
    "CompositeAnomalyd",
    "LayerGaussianBlur",
    "LayerGaussianBlurd",
    "RandARTAnomaly",
    "RandARTAnomalyD",
    "RandARTAnomalyDict",
    "RandARTAnomalyd",
    "RandARTTwinsD",
    "RandARTTwinsDict",
    "RandARTTwinsd",
    "RandBrushAnomaly",
    "RandBrushAnomalyd",
    "RandCrystallize",
    "RandCrystallized",
    "RibIntensityScale",
    "RibIntensityScaled",
    "StampBank",
    "load_brush_texture",
    "make_brush_texture",
]
