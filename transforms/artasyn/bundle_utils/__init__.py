"""Code of the ART-ASyn MONAI bundle (``bundle/``) that its configs import.

The bundle root is on ``sys.path`` only after ``initialize``, so everything a config
references lives here, in the installed package (``ALGORITHM.md`` section 7):

- :mod:`.datalist`: datalists from the authors' folder layout or a MONAI datalist JSON, with
  a check of every file and a report of the ones that cannot be read; the embedded default
  (procedural phantoms generated on first use).
- :mod:`.transforms`: loading of optional lesion masks, image labels, and the evaluation
  post-transform (anomaly map, image score, per-tau masks; ``ALGORITHM.md`` section 4).
- :mod:`.lungs`: the cached PBTSeg pass that lists the images where no lung was found.
- :mod:`.training`: the ``SupervisedTrainer`` iteration of eq. 1 and its output helpers.
- :mod:`.ema`: EMA weights (``torch.optim.swa_utils.AveragedModel``) and their ignite handler.
- :mod:`.metrics`: micro (pooled) Dice and the per-tau Dice handlers.
- :mod:`.handlers`: image panels for TensorBoard, the per-image score CSV and the metrics JSON.
"""

from .datalist import (
    DataReport,
    build_datalist,
    check_image_file,
    ensure_dataset,
    find_images,
    load_datalist_json,
    split_validation,
)
from .ema import EMAHandler, create_ema_model
from .handlers import AnomalyPanelHandler, ImageScoreSaver, MetricsJSONSaver
from .lungs import LungCheck
from .metrics import MicroDice, MicroDiceMetric, dice_handlers, dice_output, score_output
from .training import ARTASynTrainingStep, TrainingTimeLimit, loss_terms, prepare_network
from .transforms import AnomalyScored, AsLabeld, LoadChestXRayd, LoadMaskd, Restore16Bitd, chest_xray_loader
from .utils import every, find_bundle_root, stable_transform_hash
