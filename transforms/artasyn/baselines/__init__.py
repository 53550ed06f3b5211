"""The baseline anomaly syntheses that ART-ASyn is compared with (seed Table S1), by name.

:data:`BASELINES` maps a ``variant`` name to its array transform; the dictionary transforms of
:mod:`artasyn.synthesis` (``RandARTAnomalyd``, ``RandARTTwinsd``) take these names besides
``"none"``, ``"base"``, ``"base_blur_cryst"`` and ``"final"``:

| variant | method | module (in ``artasyn.baselines``) |
|---|---|---|
| ``"anatpaste"`` | AnatPaste (Sato et al. 2023): own patch, blurred shape, in the lungs | :mod:`.anatpaste` |
| ``"cutpaste"`` | CutPaste (Li et al. 2021): own rectangle, jittered, in the lungs | :mod:`.cutpaste` |
| ``"perlin"`` | DRAEM / anomalib: thresholded Perlin noise, texture blended, in the lungs | :mod:`.perlin` |

Each follows the contract of :class:`artasyn.baselines.common.RandLungAnomaly`.

Example::

    >>> from artasyn.baselines import BASELINES
    >>> sorted(BASELINES)
    ['anatpaste', 'cutpaste', 'perlin']
"""

from __future__ import annotations

from .anatpaste import RandAnatPaste
from .common import RandLungAnomaly
from .cutpaste import RandCutPaste
from .perlin import RandPerlinAnomaly

__all__ = ["BASELINES"]

#: variant name -> array transform of the baseline synthesis
BASELINES: dict[str, type[RandLungAnomaly]] = {
    cls.variant: cls for cls in (RandAnatPaste, RandCutPaste, RandPerlinAnomaly)
}
