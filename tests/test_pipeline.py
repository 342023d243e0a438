"The real pipeline, end to end, on the smoke profile in a temporary copy of the repository."
import json, shutil, subprocess, time
from pathlib import Path
import numpy as np, pytest, yaml
from PIL import Image
from conftest import ROOT, run, newly_stale

def test_data_matches_data_dvc(repo_copy):
    "`dvc pull` restored data/ exactly as data.dvc pins it."
    r = run(["dvc", "status", "data.dvc"], repo_copy)
    assert "up to date" in r.stdout, r.stdout

def test_data_regenerates_from_params(repo_copy):
    "Images and records re-rendered from params equal the pinned ones (pixels and annotations)."
    from reper.config import load_params
    from reper.scenes import make_scene, load_scenes
    p = load_params(repo_copy / "params.yaml").data
    root = repo_copy / p.root
    for split, offset in (("train", 0), ("val", p.n_train), ("test", p.n_train + p.n_val)):
        scenes, images, _ = load_scenes(root, split, limit=3)
        for k, (s, im) in enumerate(zip(scenes, images)):
            s2, im2 = make_scene(offset + k, p)
            assert s2.to_record() == json.loads((root / "annotations" / f"{split}.jsonl").read_text().splitlines()[k])
            assert np.array_equal(np.asarray(im2), np.asarray(im)), f"{s.image} differs"

def test_repro_writes_outputs(smoke):
    m = json.loads((smoke / "metrics/base.json").read_text())
    for k in ("obj_precision", "obj_recall", "attr_f1", "rel_f1", "chair_i", "chair_s"): assert 0.0 <= m[k] <= 1.0
    assert m["n_captions"] == 16 and m["n_skipped"] == 0
    assert (smoke / "models/base/config.json").exists() and (smoke / "models/base/processor_config.json").exists()
    for nb in ("runs/10_pretrain.ipynb", "runs/11_evaluate_base.ipynb"): assert (smoke / nb).exists()
    tsv = smoke / "dvclive/pretrain/plots/metrics/pretrain/loss.tsv"
    assert len(tsv.read_text().splitlines()) > 2
    r = run(["dvc", "metrics", "show"], smoke)
    assert "obj_precision" in r.stdout

def test_second_repro_is_noop(smoke):
    t = time.time(); r = run(["dvc", "repro"], smoke)
    assert "up to date" in r.stdout and "Running stage" not in r.stdout, r.stdout
    assert time.time() - t < 30

def test_param_change_reruns_only_dependents(smoke):
    "`dvc exp run -S` on an evaluate_base key reruns only that stage; a pretrain key makes every later stage stale."
    assert newly_stale(smoke, "evaluate_base.n_images", 8) == {"evaluate_base"}
    assert newly_stale(smoke, "pretrain.steps", 13) == {"pretrain"}  # its dependents follow once models/base changes
    before = (smoke / "params.yaml").read_text()
    try:
        r = run(["dvc", "exp", "run", "-S", "evaluate_base.n_images=8"], smoke)
        assert "Running stage 'evaluate_base'" in r.stdout and "Running stage 'pretrain'" not in r.stdout, r.stdout
        assert json.loads((smoke / "metrics/base.json").read_text())["n_captions"] == 8
    finally: (smoke / "params.yaml").write_text(before)

def test_corrupt_image_errors_or_is_counted(smoke):
    "A corrupt test image stops evaluate_base naming the file; with on_bad_image=skip it is counted."
    from reper.config import load_params
    p = load_params(smoke / "params.yaml")
    first = json.loads((smoke / p.data.root / "annotations/test.jsonl").read_text().splitlines()[0])
    img, params = smoke / p.data.root / first["image"], (smoke / "params.yaml").read_text()
    good = img.read_bytes()
    img.unlink(); img.write_bytes(b"\x89PNG broken")  # replace the DVC link, not the cache
    try:
        r = run(["dvc", "repro", "-s", "evaluate_base"], smoke, check=False)
        assert r.returncode != 0 and f"{first['image']}: image cannot be read" in r.stdout + r.stderr
        raw = yaml.safe_load(params); raw["data"]["on_bad_image"] = "skip"
        (smoke / "params.yaml").write_text(yaml.safe_dump(raw))
        run(["dvc", "repro", "-s", "evaluate_base"], smoke)
        assert json.loads((smoke / "metrics/base.json").read_text())["n_skipped"] == 1
    finally:
        img.unlink(); img.write_bytes(good); (smoke / "params.yaml").write_text(params)
