"""The ART-ASyn bundle's own code, imported by its configs as ``scripts`` (the model-zoo way).

Every config puts the bundle root on ``sys.path`` first (``"$sys.path.append(@bundle_root)"``,
the first entry of ``initialize``) and refers to this code by ``_target_`` (e.g.
``"scripts.datalist.build_datalist"``), which MONAI imports when it builds the component. The
installable library ``artasyn`` holds what other pipelines reuse (transforms, network, losses,
phantoms, scoring); what only this bundle needs lives here, one concern a module:

- :mod:`.loading`: the one loading chain of every workflow (file -> ``1 x H x W`` in 0..255)
  and the pre-check that decodes a file in full;
- :mod:`.dicom`: DICOM radiographs read as a clinical viewer shows them (rescale, window or
  VOI LUT, MONOCHROME1 inverted), and a writer of test / demo DICOMs;
- :mod:`.resize`: the image to ``spatial_size`` in every workflow, MONAI's anti-aliased
  bilinear ``Resize`` computed as two sparse matrix products;
- :mod:`.datalist`: datalists from the authors' folder layout or a MONAI datalist JSON, the
  data report (skipped, rejected and converted files), the embedded phantom default;
- :mod:`.transforms`: optional lesion masks and image labels of the evaluation data;
- :mod:`.lungs`: the lung cache (keyed by file stamps and settings, damaged entries
  recomputed) and the cached PBTSeg pass that lists no-lung and failing images;
- :mod:`.training`: the eq.-1 training iteration and its one-forward network view;
- :mod:`.ema`: EMA weights and their ignite handler;
- :mod:`.schedule`: how many iterations and epochs a training runs, its learning-rate schedule;
- :mod:`.checkpoint`: checkpoints written atomically and checked on load, resumable training;
- :mod:`.checkpoint_config`: checkpoints that describe their network and settings, and the
  network and settings of inference read back from them;
- :mod:`.metrics`: micro (pooled) Dice and the evaluator's metric dictionaries;
- :mod:`.handlers`: image panels, the per-image score CSV and the metrics JSON;
- :mod:`.figures`: grids of tiles with a title per row and per column (the panels, the figure);
- :mod:`.logs`: each message of a run once; the library's per-file warnings left to the data
  report;
- :mod:`.thresholds`: decision thresholds calibrated at every validation and saved with the
  weights, and their reading back for evaluation and inference;
- :mod:`.inference`: inference inputs, output writers and the run summary;
- :mod:`.ddp`: multi-GPU training;
- :mod:`.utils`: atomic file writes (the user's umask), root causes of errors, the cache
  keys of ``PersistentDataset`` and an event filter.

``make_panel.py`` (a figure), ``monailabel_bundle.py`` (a MONAI Label copy of the bundle) and
``monailabel_demo.py`` (a live MONAI Label round trip) are command-line entry points.
"""
