"""The method's constants, each named once (``docs/method.md``, the section is given per group).

Every transform, function and config takes these as its defaults; a value here is the
authors' (paper or public implementation) unless it is listed under "our choices" at the end.
Pixel sizes are given at :data:`REFERENCE_SIZE` and scale with the image
(:func:`artasyn.base.size_scale`). This module imports nothing from the package, so every
other module may import it.

Example::

    >>> from artasyn import constants as C
    >>> C.MASK_THRESHOLD, C.PBTSEG_THRESHOLDS[0], C.PBTSEG_THRESHOLDS[-1], len(C.PBTSEG_THRESHOLDS)
    (80.0, 50, 160, 23)
    >>> round(C.MIN_LUNG_AREA_FRACTION * C.REFERENCE_SIZE**2), round(C.MAX_LUNG_AREA_FRACTION * C.REFERENCE_SIZE**2)
    (2000, 10000)
"""

from __future__ import annotations

# --- conventions (docs/method.md, "Conventions") ----------------------------------------------

#: the image size (side, pixels) at which the paper's pixel constants are given
REFERENCE_SIZE = 256

# --- section 1: PBTSeg ----------------------------------------------------------------------------

#: grey-level thresholds 50, 55, ..., 160 (inclusive); a pixel is dark at ``t`` when ``img <= t``
PBTSEG_THRESHOLDS: tuple[int, ...] = tuple(range(50, 161, 5))
#: a lung's area lies strictly between these fractions of the image (2000 and 10000 px at 256 x 256)
MIN_LUNG_AREA_FRACTION = 2000 / REFERENCE_SIZE**2
MAX_LUNG_AREA_FRACTION = 10000 / REFERENCE_SIZE**2
#: a lung's area over its convex-hull area must exceed this
MIN_LUNG_SOLIDITY = 0.6
#: a lung's convex-hull pixels on the image border, over the hull's perimeter, must stay below this
MAX_BORDER_FRACTION = 0.15
#: a lung's centroid lies strictly inside the band from ``1/d`` to ``1 - 1/d`` of each axis (sixths)
CENTROID_BAND_DIVISOR = 6
#: the side split of the bounding boxes: thirds of the width
SIDE_DIVISOR = 3
#: stop at the first threshold above this at which no component passes
EARLY_STOP_THRESHOLD = 130
#: the optional border-brightening pre-step: gain outside the box, the box's top margin (fraction
#: of H; the bottom margin is half of it) and its side margins (fraction of W)
BORDER_GAIN = 1.6
BORDER_BOX_TOP = 1 / 4
BORDER_BOX_SIDE = 1 / 10

# --- section 2: ART-ASyn synthesis ----------------------------------------------------------------

#: how many synthetic twins one healthy image yields (uniform integer, inclusive range)
NUM_TWINS = (1, 3)

# 2.1 A_base, the brush-painted layer
#: size (height, width) of the authors' brush texture
BRUSH_TEXTURE_SIZE = (106, 168)
#: the two brush widths (pixels at 256 x 256), painted in this order
BRUSH_WIDTHS = (80, 50)
#: stroke segments per lung, and the probability of none (the others share the rest equally)
SEGMENT_COUNTS = (0, 1, 2, 3, 4, 10, 11, 12, 13, 14)
P_ZERO_SEGMENTS = 0.2
#: half-range of the uniform offset of the Bezier control point from the midpoint (pixels)
CONTROL_OFFSET = 30.0
#: samples per Bezier curve; cap on the stamps per brush and segment
CURVE_SAMPLES = 100
MAX_STAMPS = 100
#: stamp spacing as a fraction of the brush width
STAMP_SPACING_FRACTION = 0.05
#: the smallest jittered stamp width, as a fraction of the brush width
WIDTH_JITTER = 0.3
#: uniform ranges of a stamp's opacity and flow (the alpha is multiplied by both)
OPACITY_RANGE = (0.07, 0.3)
FLOW_RANGE = (0.67, 1.0)
#: alpha factor of each finished segment layer
SEGMENT_OPACITY = 0.95
#: the brush colour is this percentile of the image
COLOUR_PERCENTILE = 85.0

# 2.2 T_blur and T_cryst
#: Gaussian radius (Pillow semantics: the standard deviation) of B, and of Cb
BLUR_RADIUS = 8.0
CRYST_BLUR_RADIUS = 3.0
#: Voronoi seeds of the crystallization at 256 x 256 (scaled by the image area)
NUM_CRYST_SEEDS = 500

# 2.3 layer composition
#: alpha factors of A, B, C and Cb, and the order in which B, C, Cb are composited over A
BASE_ALPHA_SCALE = 0.4
BLUR_ALPHA_SCALE = 1.0
CRYST_ALPHA_SCALE = 0.5
CRYST_BLUR_ALPHA_SCALE = 0.5
COMPOSE_ORDER = ("blur", "cryst", "cryst_blur", "cryst", "blur")

# 2.4 T_rib
#: soft lung mask S: side of the square dilation, Gaussian kernel size and sigma (pixels)
LUNG_DILATION = 7
SOFT_MASK_KERNEL = 31
SOFT_MASK_SIGMA = 5.0
#: rib contrast ``R = RIB_WEIGHT * I / 255 + (1 - RIB_WEIGHT)``
RIB_WEIGHT = 0.5
#: brightness enhancement of the scaled alpha
ALPHA_BRIGHTNESS = 1.5

# 2.5 compositing and the mask
#: the anomaly mask is ``alpha > MASK_THRESHOLD`` (of 255)
MASK_THRESHOLD = 80.0

# --- section 3: the detector -------------------------------------------------------------------------

#: the authors' reconstruction UNet: base width, width multiplier per level, residual blocks per
#: level, downsample factors with self-attention, attention heads, dropout
UNET_CHANNELS = 32
UNET_CHANNEL_MULT = (1, 1, 2, 3, 4)
UNET_NUM_RES_BLOCKS = 2
UNET_ATTENTION_DOWNSAMPLE = (8, 16, 32)
UNET_NUM_HEADS = 1
UNET_DROPOUT = 0.1
#: training: AdamW learning rate (no weight decay), healthy images per batch, iterations, EMA decay
LEARNING_RATE = 1e-4
BATCH_SIZE = 4
MAX_ITERATIONS = 100_000
EMA_DECAY = 0.9999

# the loss (eq. 1)

#: weights of L_global, L_local, L_feat, L_dice
W_GLOBAL = 1.0
W_LOCAL = 2.0
W_FEAT = 1.0
W_DICE = 1.0
#: the authors' squared-error threshold of the anomaly map in L_dice (images in [0, 1])
PAPER_DICE_ERROR_THRESHOLD = 0.2

# --- section 4: inference and evaluation ----------------------------------------------------------

#: the sweep of the relative mask threshold tau (seed, Table S2); its first value is the default
DEFAULT_TAUS = (0.2, 0.4, 0.6, 0.8)
DEFAULT_TAU = DEFAULT_TAUS[0]
#: the absolute floor of the mask threshold: ``|x - r| >= max(MIN_THRESHOLD, tau * max |x - r|)``
MIN_THRESHOLD = 0.03

# --- baselines (Table S1 comparison; CutPaste: Li et al. 2021, AnatPaste: Sato et al. 2023) ---------

#: patch area as a fraction of the image, uniform in this range (CutPaste, AnatPaste)
PATCH_AREA_RATIO = (0.02, 0.15)
#: patch aspect ratio, log-uniform in [PATCH_ASPECT_RATIO, 1 / PATCH_ASPECT_RATIO]
PATCH_ASPECT_RATIO = 0.3
#: brightness and contrast jitter of the pasted patch
PATCH_JITTER = 0.1
#: AnatPaste: margin (px at 256) the shape is shrunk by, blur radius and peak opacity ranges
ANATPASTE_MARGIN = 10.0
#: AnatPaste's mask also holds every pixel its soft edge changes by more than this (grey levels)
ANATPASTE_MASK_CHANGE = 10.0
ANATPASTE_BLUR_RANGE = (0, 15)
ANATPASTE_PEAK_RANGE = (150, 255)

# --- our choices (not the paper's) ------------------------------------------------------------------

#: squared-error threshold of the soft anomaly map of L_dice, calibrated to the anomalies' error
#: scale (section 8): on 100 real healthy images with one A_final anomaly each, the median squared
#: error inside the mask is ~0.063 and its 10th percentile ~0.004, while the paper's 0.2 is
#: reached by ~4% of mask pixels (``bench/bench_dice_calibration.py``, bench/results)
DICE_ERROR_THRESHOLD = 0.01
#: steepness of the sigmoid that makes L_dice differentiable: the map rises from 0.12 to 0.88
#: over ``DICE_ERROR_THRESHOLD +- 0.002`` and is 5e-5 where the reconstruction is exact (so healthy
#: pixels add almost nothing to the Dice denominator)
DICE_SCALE = 1000.0
#: rotation quantization of the stamp banks, degrees (the rotation is uniform; section 2.1)
STAMP_ANGLE_STEP = 5.0
#: memory budget of one stamp bank's cache
STAMP_CACHE_BYTES = 256 << 20
#: decision thresholds (section 4, ours: the paper reports threshold-free AP / AUC and per-image
#: relative masks): the image threshold leaves this share of the healthy validation images
#: normal (``score <= t``), the level a screening tool is usually set to (1 in 20 healthy
#: images flagged) ...
DEFAULT_SPECIFICITY = 0.95
#: ... the pixel threshold is a quantile of the healthy validation images' anomaly maps, under a
#: rule: ``image_max``, the quantile of each image's largest value still masked, bounds the
#: share of healthy images with a non-empty mask, what a user sees; ``pooled``, the quantile of
#: all their values, bounds only the share of healthy *pixels* masked (at q 0.999 it left a
#: speck on every healthy test image of the small preset) ...
DEFAULT_PIXEL_RULE = "image_max"
#: ... at this quantile, the image threshold's level: 1 healthy image in 20 gets a mask on
#: validation (ZhangLab, ``cpu.json``: 9 % of held-out healthy images, two-fold; a ``pooled``
#: threshold needs a far higher quantile, ~0.999) ...
DEFAULT_PIXEL_QUANTILE = 0.95
#: ... and a mask keeps only its 8-connected components of at least this share of the map's
#: pixels (32 px at 128 x 128, 128 px at 256 x 256): without it one healthy speck sets the
#: ``image_max`` threshold (small preset: lesion micro Dice 0.009 without, 0.284 with, and no
#: healthy test mask; pooled 0.999 gave 0.285 with a mask on all of them; measured at
#: 128 x 128 only). ``bench/bench_thresholds.py``, bench/results/thresholds_*.json
MIN_MASK_AREA_FRACTION = 32 / 128**2
#: masks are drawn on every image (``none``) or only on the images whose score passes the image
#: threshold at ``specificity`` (``image``): a healthy image's mask is then empty unless the image
#: itself is flagged, so the pixel threshold can be generous inside the lungs
DEFAULT_MASK_GATE = "none"
#: the ``dice`` pixel rule tries this many thresholds (quantiles of the diseased validation images'
#: map values) for the best micro Dice against their lesion masks
DICE_RULE_CANDIDATES = 128
