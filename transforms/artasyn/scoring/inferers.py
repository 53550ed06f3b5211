"""The network's input at scoring time (our addition; not in the paper).

:class:`SmoothedInputInferer` runs the reconstruction network on the image smoothed by a
Gaussian of ``sigma`` pixels (:func:`artasyn.intensity.reflect_gaussian_smooth`, borders
mirrored); the anomaly map then compares the image as given with that reconstruction. It is the
``inferer`` of the bundle's validation, evaluation and inference (``score_input_sigma``), so
that MONAI Label and any ``SupervisedEvaluator`` get it from the config; training is unchanged.
The idea: a detector trained on sharp healthy radiographs also flags healthy ones that were taken
or processed less sharply, and a smoothing of about a pixel at the working size removes that
difference while opacities, which are wide, stay. Measured on ZhangLab (``docs/experiments.md``
2.28) it lifted two of ``cpu.json``'s three seeds and dropped the third, and it hurts lesion
maps, so no preset sets it. ``sigma=0`` (the default) is MONAI's ``SimpleInferer``.

Example::

    >>> import torch
    >>> from artasyn.scoring import SmoothedInputInferer
    >>> x = torch.zeros(1, 1, 16, 16); x[0, 0, ::2] = 1.0          # stripes, one pixel wide
    >>> out = SmoothedInputInferer(1.5)(x, torch.nn.Identity())    # what the network sees
    >>> round(float(out.max() - out.min()), 3), float(SmoothedInputInferer(0.0)(x, torch.nn.Identity()).max())
    (0.0, 1.0)
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from monai.inferers import Inferer

from ..intensity import reflect_gaussian_smooth, smoothing_sigma

__all__ = ["SmoothedInputInferer"]


class SmoothedInputInferer(Inferer):
    """``network(G_sigma * inputs)``: the network sees the batch smoothed by a Gaussian of ``sigma`` pixels.

    Args:
        sigma: the Gaussian's standard deviation in pixels of the network's input, ``>= 0``
            (0: the input as given, as ``SimpleInferer``).
    """

    def __init__(self, sigma: float = 0.0) -> None:
        super().__init__()
        self.sigma = smoothing_sigma(sigma, "SmoothedInputInferer")

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any):
        """``network(smoothed inputs, *args, **kwargs)``; ``inputs`` is ``B x C x H x W``."""
        return network(reflect_gaussian_smooth(inputs, self.sigma), *args, **kwargs)
