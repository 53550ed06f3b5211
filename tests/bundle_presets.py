"""Bundle overrides shared by the tests that run the bundle (ids as on the command line)."""

#: a 3-level, 8-channel network: scriptable, trains in seconds on a CPU
TINY_NET = {
    "network_def#channels": 8,
    "network_def#channel_mult": [1, 2, 2],
    "network_def#num_res_blocks": 1,
    "network_def#attention_downsample": [4],
}

#: 64 px inputs (PBTSeg at 128), the tiny network, data loading in the main process
TINY_INFER = {"spatial_size": [64, 64], "pbtseg_size": 128, **TINY_NET, "num_workers": 0}

#: TINY_INFER plus 64 px phantoms and small batches; one torch thread, which is much faster
#: than two on a shared 2-core machine
TINY_TRAIN = {**TINY_INFER, "phantom_size": 64, "batch_size": 2, "val_batch_size": 8, "cpu_threads": 1}


def outputs(root) -> dict:
    """Overrides that send everything a run writes (and its caches) under ``root``.

    The bundle root stays the repository's ``bundle`` (where ``scripts`` is): commands are run
    from the repository root, as documented, with only their outputs moved.
    """
    return {
        "ckpt_dir": f"{root}/models",
        "output_dir": f"{root}/eval",
        "runs_dir": f"{root}/runs",
        "cache_dir": f"{root}/cache",
    }


def cli_overrides(overrides: dict) -> list:
    """``--id value`` command-line arguments (values as JSON) for ``python -m monai.bundle``."""
    import json

    args = []
    for key, value in overrides.items():
        args += [f"--{key}", json.dumps(value)]
    return args


#: a checkpoint path that never exists: ``inference.json`` builds its network from the checkpoint at
#: ``ckpt_path`` when there is one, and its default is ``bundle/models/model.pt``, which the README's
#: first command writes; tests that build a network from their own overrides point here instead
NO_CHECKPOINT = str(__import__("pathlib").Path(__file__).resolve().parent / "no-such-dir" / "model.pt")

#: the standalone inference config, as MONAI Label and the docs run it
INFERENCE = str(__import__("pathlib").Path(__file__).resolve().parents[1] / "bundle" / "configs" / "inference.json")


def inference_parser(overrides: dict):
    """``inference.json`` parsed with ``overrides`` set (ids as on the command line); its
    ``ckpt_path`` is :data:`NO_CHECKPOINT` unless ``overrides`` names one, so the network is built
    from the overrides, never from a checkpoint that a user's run left in ``bundle/models``."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(INFERENCE)
    for key, value in {"ckpt_path": NO_CHECKPOINT, **overrides}.items():
        parser[key] = value
    return parser


def random_checkpoint(path, overrides: dict, seed: int = 0):
    """Write to ``path`` a checkpoint of ``inference.json``'s network built with ``overrides``:
    seeded random weights under ``model``, the layout the training's savers write."""
    import torch
    from monai.bundle import ConfigWorkflow

    overrides = {"ckpt_path": NO_CHECKPOINT, **overrides}
    wf = ConfigWorkflow(config_file=INFERENCE, workflow_type="infer", logging_file=False, **overrides)
    torch.manual_seed(seed)
    torch.save({"model": wf.parser.get_parsed_content("network_def").state_dict()}, path)
    return path


def run_inference(overrides: dict) -> list[dict]:
    """``run inference`` of ``inference.json`` in this process; the rows of its ``anomaly_scores.csv``."""
    import csv
    from pathlib import Path

    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(config_file=INFERENCE, workflow_type="infer", logging_file=False, **overrides)
    wf.initialize()
    wf.run()
    wf.finalize()
    with open(Path(overrides["output_dir"]) / "anomaly_scores.csv") as f:
        return list(csv.DictReader(f))
