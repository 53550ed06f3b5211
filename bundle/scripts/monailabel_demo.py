"""A live MONAI Label round trip: a real ``monailabel start_server`` with this bundle, and an HTTP client.

Run it in the MONAI Label environment of ``bundle/docs/deployment.md`` ("MONAI Label"), from
the repository root::

    python bundle/scripts/monailabel_demo.py [--ckpt bundle/models/model.pt --preset bundle/configs/small.json]
        [--studies <folder of radiographs>] [--port 0] [--work <folder>] [--keep]

What it does, all under a work folder (a temporary one unless ``--work``):

1. ``monailabel apps --download --name monaibundle --output <work>/apps`` (MONAI Label copies
   its installed sample app; nothing is downloaded);
2. packages the bundle with ``monailabel_bundle.py`` into
   ``<work>/apps/monaibundle/model/artasyn_cxr_anomaly_segmentation``, with ``--ckpt`` as its
   weights or, without ``--ckpt``, the weights of a freshly initialised network (seed 0) of the
   ``small.json`` preset (an untrained network: the round trip is checked, not the detector);
3. fills ``<work>/studies`` with radiographs: the images of ``--studies`` (PNG, JPEG, NIfTI,
   DICOM; a DICOM file is copied as ``<name>.dcm``, a ``.jpeg`` as ``.jpg``, the names MONAI
   Label's datastore lists; every other file is named as skipped), or by default a few
   real ones from ``../shared/data`` (``$ARTASYN_SHARED_DATA``) when that folder is there
   (COVID-QU-Ex 256 x 256 PNGs, a 1024 x 1024 NIH PNG, a 224 x 224 RGB ZhangLab JPEG), plus a
   non-square phantom (200 rows x 160 columns, from ``artasyn.phantom``) so that rows and
   columns cannot be swapped unnoticed, as a PNG and as a 12-bit MONOCHROME1 DICOM
   (``phantom_200x160_mono1.dcm``, stored as ``4095 - x``: it must give the PNG's mask);
4. starts ``monailabel start_server --app ... --studies ... --conf models
   artasyn_cxr_anomaly_segmentation --conf zoo_source local --conf sam2 false --conf
   skip_trainers true`` on 127.0.0.1 and a free port, in the background, with
   ``MONAI_LABEL_DATASTORE_FILE_EXT`` extended by ``*.dcm``
   (:func:`scripts.monailabel_bundle.datastore_env`: MONAI Label's default list has no DICOM),
   and waits for ``GET /info/`` to answer;
5. the client (standard library only): checks ``/info/`` (the model, its type, the label
   ``opacity``), lists the datastore (every study must be in it, the DICOM ones too), then for
   every study ``POST /infer/artasyn_cxr_anomaly_segmentation?image=<id>&output=all`` (and
   once more with each phantom, PNG and DICOM, uploaded as a file), reads the multipart
   answer (JSON params + label file) and
   checks that the label is a PNG of the radiograph's size (rows x columns) with values in
   {0, 1}, and that it equals the mask the bundle's own ``inference.json`` computes in this
   process from the same file and weights;
6. prints a summary and the server's log lines of interest, stops the server (SIGINT to its
   process group, then SIGKILL after 30 s) and exits 0 only when every check passed.

Labels come back in the study's own format (MONAI Label's writer takes the input's extension):
PNG for PNG studies, but JPEG, a lossy format, for a JPEG study. The client therefore asks for
``{"result_extension": ".png"}`` in every request's params, as a 2-D client should.

The weights of a freshly initialised network make an arbitrary (but well-formed) mask; pass a
trained ``--ckpt`` (with its ``--preset``) to see the detector's masks.
"""

from __future__ import annotations

import argparse
import email
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import numpy as np

BUNDLE = Path(__file__).resolve().parents[1]
REPO = BUNDLE.parent
MODEL = "artasyn_cxr_anomaly_segmentation"
SMALL = BUNDLE / "configs" / "small.json"
#: server log lines worth showing (substrings)
LOG_KEYS = (
    "Adding Bundle from Local",
    "Using Bundle Models",
    "Adding Inferer",
    "Uvicorn running",
    "Application startup complete",
    "Infer Request",
    "Result ext",
    "++ Latencies",
    "Shutting down",
    "Finished server process",
    "Traceback",
    "Error",
)


def _shared_data() -> Path:
    return Path(os.environ.get("ARTASYN_SHARED_DATA", REPO.parent / "shared" / "data"))


def _first(folder: Path, pattern: str, n: int) -> list[Path]:
    return sorted(folder.glob(pattern))[:n] if folder.is_dir() else []


def study_name(path: Path) -> str:
    """The name a radiograph gets in the studies folder: one that MONAI Label's datastore lists.

    DICOM files (by suffix or preamble) become ``<stem>.dcm`` and ``.jpeg`` becomes ``.jpg``
    (the datastore lists ``*.dcm`` with :func:`scripts.monailabel_bundle.datastore_env`, and
    ``*.jpg`` but not ``*.jpeg``); other names are kept.
    """
    from scripts.dicom import DICOM_SUFFIXES, is_dicom_file

    name, low = path.name, path.name.lower()
    if low.endswith(".jpeg"):
        return name[: -len(".jpeg")] + ".jpg"
    if low.endswith(".nii.gz") or low.endswith((".nii", ".png", ".jpg")):
        return name
    if is_dicom_file(path):
        for suffix in DICOM_SUFFIXES:
            if low.endswith(suffix):
                return name[: -len(suffix)] + ".dcm"
        return name + ".dcm"
    return name


def study_id(name: str) -> str:
    """MONAI Label's image id of a study file: its name less the datastore extension (``a.nii.gz`` -> ``a``)."""
    from scripts.monailabel_bundle import DATASTORE_FILE_EXT

    for ext in sorted((e.lstrip("*") for e in DATASTORE_FILE_EXT), key=len, reverse=True):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name.rsplit(".", 1)[0]


def make_studies(studies: Path, source: str | None) -> list[Path]:
    """Fill ``studies`` with radiographs (see the module docstring); the list of files written.

    From ``source``, the files :func:`scripts.loading.is_image_file` accepts are copied (under
    :func:`study_name`); every other file is named as skipped.
    """
    from PIL import Image

    from artasyn.phantom import make_phantom
    from scripts.dicom import write_dicom
    from scripts.loading import SUPPORTED_FORMATS, is_image_file

    studies.mkdir(parents=True, exist_ok=True)
    picked: list[Path] = []
    if source:
        src = Path(source)
        files = sorted(p for p in src.iterdir() if p.is_file() and not p.name.startswith("."))
        picked = [p for p in files if is_image_file(p)]
        for p in files:
            if p not in picked:
                print(f"[demo] skipped {p}: not an image (supported: {SUPPORTED_FORMATS})")
        if not picked:
            raise SystemExit(f"no radiograph in {src} (supported: {SUPPORTED_FORMATS})")
    else:
        data = _shared_data()
        if (data / "README.md").is_file():
            picked += _first(data / "covidquex_covid_infection" / "images", "*.png", 2)
            picked += _first(data / "nih_nofinding_normal" / "images", "*.png", 1)
            picked += _first(data / "zhanglab_val" / "pneumonia", "*.jpeg", 1)
    written = []
    for p in picked:
        name = study_name(p)
        shutil.copy2(p, studies / name)  # a temporary copy for the server's datastore
        written.append(studies / name)
    phantom = make_phantom(200, diseased=True, seed=7)["image"][:, 20:180]  # 200 rows x 160 columns
    Image.fromarray(phantom).save(studies / "phantom_200x160.png")
    written.append(studies / "phantom_200x160.png")
    # the same phantom as a 12-bit MONOCHROME1 DICOM (white stored as 0): it reads as the PNG does
    twelve = (phantom.astype(np.uint32) * 4095 // 255).astype(np.uint16)
    written.append(write_dicom(studies / "phantom_200x160_mono1.dcm", 4095 - twelve, "MONOCHROME1", bits_stored=12))
    return written


def make_checkpoint(path: Path, presets: list[str]) -> None:
    """A checkpoint ``{"model": state_dict}`` of a freshly initialised network (seed 0) of ``presets``."""
    import torch

    sys.path.insert(0, str(BUNDLE))
    from monai.bundle import ConfigParser

    from scripts.monailabel_bundle import inference_config
    from scripts.utils import atomic_torch_save

    torch.manual_seed(0)
    parser = ConfigParser(inference_config(presets))
    atomic_torch_save({"model": parser.get_parsed_content("network_def").state_dict()}, path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(url: str, data: bytes | None = None, headers: dict | None = None, timeout: float = 600):
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.headers.get("Content-Type", ""), r.read()


def _multipart(fields: dict[str, tuple[str | None, bytes, str]]) -> tuple[bytes, str]:
    """Encode ``{name: (filename or None, bytes, content type)}`` as multipart/form-data."""
    boundary = uuid.uuid4().hex
    body = b""
    for name, (filename, content, ctype) in fields.items():
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disp}\r\nContent-Type: {ctype}\r\n\r\n".encode()
        body += content + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _parse_infer_answer(ctype: str, body: bytes) -> tuple[dict, str | None, bytes | None]:
    """MONAI Label's ``output=all`` answer: (params, label file name, label bytes)."""
    if ctype.startswith("application/json"):
        return json.loads(body), None, None
    msg = email.message_from_bytes(f"Content-Type: {ctype}\r\n\r\n".encode() + body)
    params, name, label = {}, None, None
    for part in msg.get_payload():
        field = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if field == "params":
            params = json.loads(payload)
        elif field == "image":
            name, label = part.get_filename(), payload
    return params, name, label


class ExpectedMask:
    """The mask the packaged bundle's ``inference.json`` gives for a file, computed in this process."""

    def __init__(self, bundle: Path):
        import torch
        from monai.bundle import ConfigParser

        sys.path.insert(0, str(bundle))
        self.parser = ConfigParser()
        self.parser.read_config(str(bundle / "configs" / "inference.json"))
        self.parser["bundle_root"] = str(bundle)
        self.parser["device"] = "$torch.device('cpu')"
        self.pre = self.parser.get_parsed_content("preprocessing")
        self.post = self.parser.get_parsed_content("postprocessing")
        self.net = self.parser.get_parsed_content("network_def").eval()
        self.inferer = self.parser.get_parsed_content("inferer")
        ckpt = torch.load(bundle / "models" / "model.pt", map_location="cpu", weights_only=True)
        self.net.load_state_dict(ckpt["model"])

    def __call__(self, path: Path) -> np.ndarray:
        import torch

        item = self.pre({"image": str(path)})
        with torch.no_grad():
            item["pred"] = self.inferer(torch.as_tensor(item["image"])[None], self.net)[0]
        return np.asarray(self.post(item)["pred"]).T  # pred is W x H: rows first again


def check_label(name: str | None, data: bytes | None, study: Path, expected: np.ndarray) -> tuple[bool, dict]:
    """The label is a PNG of the study's rows x columns with values in {0, 1}, equal to ``expected``."""
    import io

    from PIL import Image

    if data is None:
        return False, {"error": "no label file in the answer"}
    if study.name.lower().endswith(".dcm"):
        from scripts.loading import read_radiograph

        rows, cols = (int(s) for s in read_radiograph(study).shape[1:])
    else:
        with Image.open(study) as im:
            rows, cols = im.height, im.width
    label = Image.open(io.BytesIO(data))
    arr = np.asarray(label)
    values = sorted(int(v) for v in np.unique(arr))
    info = {
        "file": name,
        "format": label.format,
        "mode": label.mode,
        "image_rows_cols": [rows, cols],
        "label_shape": list(arr.shape),
        "values": values,
        "opacity_px": int((arr == 1).sum()),
        "equal_to_bundle": bool(arr.shape == expected.shape and np.array_equal(arr, expected)),
    }
    ok = label.format == "PNG" and arr.shape == (rows, cols) and set(values) <= {0, 1} and info["equal_to_bundle"]
    return ok, info


def run_client(base: str, studies: list[Path], expected: ExpectedMask) -> bool:
    """The HTTP client: /info/, the datastore, /infer by id for every study and by upload once."""
    all_ok = True
    _, body = _request(f"{base}/info/")
    info = json.loads(body)
    model = info.get("models", {}).get(MODEL, {})
    ok = bool(model) and model.get("type") == "segmentation" and model.get("labels") == {"opacity": 1}
    all_ok &= ok
    print(f"[client] GET /info/: name={info.get('name')!r} models={sorted(info.get('models', {}))}")
    print(f"[client]   {MODEL}: type={model.get('type')} labels={model.get('labels')} -> {'ok' if ok else 'FAIL'}")

    _, body = _request(f"{base}/datastore/?output=all")
    ids = sorted(json.loads(body).get("objects", {}))
    print(f"[client] GET /datastore/: {len(ids)} images {ids}")
    by_id = {study_id(p.name): p for p in studies}
    missing = sorted(set(by_id) - set(ids))
    if missing:
        print(f"[client]   not in the datastore: {missing} -> FAIL")
    all_ok &= set(ids) == set(by_id)

    requests = [(i, by_id[i], False) for i in ids if i in by_id]
    for name in ("phantom_200x160", "phantom_200x160_mono1"):
        requests.append((name, by_id[name], True))
    for image_id, study, upload in requests:
        params = json.dumps({"result_extension": ".png"})
        if upload:
            url = f"{base}/infer/{MODEL}?output=all"
            kind = "application/dicom" if study.name.endswith(".dcm") else "image/png"
            body, ctype = _multipart(
                {"params": (None, params.encode(), "text/plain"), "file": (study.name, study.read_bytes(), kind)}
            )
            what = f"POST /infer/{MODEL} (file upload {study.name})"
        else:
            url = f"{base}/infer/{MODEL}?" + urllib.parse.urlencode({"image": image_id, "output": "all"})
            body, ctype = _multipart({"params": (None, params.encode(), "text/plain")})
            what = f"POST /infer/{MODEL}?image={image_id}"
        t0 = time.perf_counter()
        try:
            rtype, answer = _request(url, body, {"Content-Type": ctype})
        except urllib.error.HTTPError as e:
            print(f"[client] {what}: HTTP {e.code} {e.read()[:500]!r} -> FAIL")
            all_ok = False
            continue
        seconds = time.perf_counter() - t0
        params_back, name, label = _parse_infer_answer(rtype, answer)
        ok, details = check_label(name, label, study, expected(study))
        ok &= params_back.get("label_names") == {"opacity": 1}
        all_ok &= ok
        latency = params_back.get("latencies", {}).get("total")
        print(f"[client] {what}: {seconds:.2f} s (server total {latency} s) -> {'ok' if ok else 'FAIL'}")
        print(f"[client]   label_names={params_back.get('label_names')} {json.dumps(details)}")
    return all_ok


def monailabel_command() -> list[str]:
    """The ``monailabel`` command of this Python environment (see :func:`monailabel_env`)."""
    exe = Path(sys.executable).parent / "monailabel"
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "monailabel.main"]


def monailabel_env(tmp: Path | None = None) -> dict:
    """This environment, as an activated one: the ``monailabel`` script runs ``$MONAILABEL_PYEXE`` (else
    ``python`` from ``PATH``), which must be this interpreter even when the venv is not activated.
    ``tmp``: the server's ``TMPDIR`` (it leaves its logging config and uploads there)."""
    from scripts.monailabel_bundle import datastore_env

    env = dict(os.environ, MONAILABEL_PYEXE=sys.executable, **datastore_env())
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    if tmp is not None:
        tmp.mkdir(parents=True, exist_ok=True)
        env["TMPDIR"] = str(tmp)
    return env


def server_command(app: Path, studies: Path, port: int) -> list[str]:
    head = monailabel_command()
    conf = {"models": MODEL, "zoo_source": "local", "sam2": "false", "skip_trainers": "true", "preload": "false"}
    cmd = head + ["start_server", "--app", str(app), "--studies", str(studies), "--host", "127.0.0.1"]
    cmd += ["--port", str(port)]
    for k, v in conf.items():
        cmd += ["--conf", k, v]
    return cmd


def wait_for_server(base: str, proc: subprocess.Popen, timeout: float) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode} before answering")
        try:
            _request(f"{base}/info/", timeout=5)
            return time.perf_counter() - t0
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            time.sleep(1.0)
    raise TimeoutError(f"no answer from {base}/info/ within {timeout:.0f} s")


def stop_server(proc: subprocess.Popen) -> None:
    """SIGINT to the server's own process group (uvicorn shuts down cleanly), SIGKILL after 30 s."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGINT, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")  # runs the clean-up of main() (stops the server)


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", help="checkpoint (models/model.pt of a training); default: a freshly initialised network")
    ap.add_argument(
        "--preset",
        action="append",
        default=[],
        help="preset the checkpoint was trained with (default without --ckpt: small.json)",
    )
    ap.add_argument("--studies", help="folder of radiographs to serve (default: shared data when present, + a phantom)")
    ap.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    ap.add_argument("--work", help="work folder (default: a temporary one, removed at the end)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--startup_timeout", type=float, default=300.0)
    args = ap.parse_args()

    sys.path.insert(0, str(BUNDLE))
    from scripts.monailabel_bundle import make_monailabel_bundle

    work = Path(args.work).resolve() if args.work else Path(tempfile.mkdtemp(prefix="artasyn_monailabel_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"[demo] work folder: {work}")
    proc, ok = None, False
    log_path = work / "server.log"
    try:
        apps = work / "apps"
        if not (apps / "monaibundle").is_dir():
            subprocess.run(
                monailabel_command() + ["apps", "--download", "--name", "monaibundle", "--output", str(apps)],
                check=True,
                stdout=subprocess.DEVNULL,
                env=monailabel_env(),
            )
        app = apps / "monaibundle"
        presets = args.preset or ([] if args.ckpt else [str(SMALL)])
        ckpt = Path(args.ckpt) if args.ckpt else work / "fresh_model.pt"
        if not args.ckpt:
            make_checkpoint(ckpt, presets)
        what = f"checkpoint {args.ckpt}" if args.ckpt else "freshly initialised network (seed 0, untrained)"
        print(f"[demo] weights: {what}; presets: {[Path(p).name for p in presets]}")
        bundle = make_monailabel_bundle(app / "model" / MODEL, ckpt, presets)
        print(f"[demo] bundle packaged: {bundle}")
        studies_dir = work / "studies"
        studies = make_studies(studies_dir, args.studies)
        print(f"[demo] studies: {[p.name for p in studies]}")
        expected = ExpectedMask(bundle)

        port = args.port or free_port()
        base = f"http://127.0.0.1:{port}"
        cmd = server_command(app, studies_dir, port)
        print(f"[demo] starting: {' '.join(cmd)}")
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=work,
                env=monailabel_env(work / "tmp"),
            )
        seconds = wait_for_server(base, proc, args.startup_timeout)
        print(f"[demo] server answered /info/ after {seconds:.1f} s (pid {proc.pid}, {base})")
        ok = run_client(base, studies, expected)
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - reported with the server's log below
        print(f"[demo] FAILED: {type(e).__name__}: {e}")
        ok = False
    finally:
        if proc is not None:
            stop_server(proc)
            print(f"[demo] server stopped (exit code {proc.returncode})")
        if log_path.is_file():
            lines = log_path.read_text(errors="replace").splitlines()
            shown = [line for line in lines if any(k in line for k in LOG_KEYS)]
            print(f"[server log] {len(lines)} lines in {log_path}; excerpt:")
            for line in shown[:60] if ok else lines[-80:]:
                print(f"  {line[:300]}")
        if not args.keep and not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print(f"[demo] {'PASS' if ok else 'FAIL'}: MONAI Label round trip of {MODEL}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
