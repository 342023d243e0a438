"""The paper-scale input path, end to end, on tiny artefacts in the real formats: a llava-hf LLaVA-1.5 checkpoint, a
`llava_v1_5_mix665k.json` records file with JPEGs (one missing, one corrupt), an OpenAI-compatible judge on the
loopback and a FACTUAL-style seq2seq parser. The stage notebooks run under papermill as `dvc repro` runs them; only
the params file differs from the embedded default."""
import hashlib, json, os, subprocess, sys, time
from pathlib import Path
import pytest, yaml
from conftest import ROOT, params_with
from test_judge_openai import ChatServer

KEY = "sk-paper-scale-7f3a9c1e5b2d4f6a8c0e"  # a fake key: it must reach the server and no file
N_GOOD, TEMPS = 8, [0.0, 0.6, 1.2]
WORDS = "A red car is parked next to a small dog. A man rides a bicycle near a bench. Two people sit on a couch."

def judge_or_caption(body) -> str:
    "The endpoint's reply: a verdict (its score a hash of the caption) to the judge's rubric, else a reference caption."
    text = body["messages"][0]["content"][0]["text"]
    if "Score the caption out of 10" not in text: return f"{WORDS} ({body['model']})"
    caption = text.split("Caption: ", 1)[1].split("\n", 1)[0]
    return f"Score: {1 + int(hashlib.md5(caption.encode()).hexdigest(), 16) % 10}\nReason: It mentions a dog that is not there."

def write_records(root: Path) -> Path:
    "LLaVA's image folder with a records file: N_GOOD JPEG records, a text-only one, one whose image is missing, one corrupt."
    from reper.scenes import make_scene
    p, recs = params_with().data, []
    for k in range(N_GOOD + 2):
        rel = f"coco/train2017/{k:012d}.jpg" if k % 2 else f"vg/VG_100K/{k + 1}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        if k == N_GOOD: (root / rel).write_bytes(b"\xff\xd8\xff\xe0 not a whole JPEG")
        elif k < N_GOOD: make_scene(k, p)[1].resize((80 + 8 * k, 60)).save(root / rel, "JPEG", quality=90)
        recs.append({"id": f"{k:012d}", "image": rel, "conversations": [{"from": "human", "value": "<image>\nWhat is this?"},
                                                                          {"from": "gpt", "value": "Shapes."}]})
    recs.insert(3, {"id": "sharegpt_0", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]})
    (root / "llava_v1_5_mix665k.json").write_text(json.dumps(recs))
    return root

GRAPHS = ["( car , is , red ) , ( car , next to , dog ) , ( dog , is , small )", "( man , ride , bicycle ) , ( bicycle , near , bench )",
          "( people , is , 2 ) , ( people , sit on , couch )"]

def write_parser(dest: Path) -> Path:
    "A tiny T5 with a word-level tokenizer (FACTUAL's checkpoint kind), trained a few seconds to write graphs for WORDS' sentences."
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, decoders, trainers
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration
    sents = [x.strip() + "." for x in WORDS.split(".") if x.strip()]
    t = Tokenizer(models.WordLevel(unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    t.train_from_iterator(["Generate Scene Graph: " + WORDS] + GRAPHS, trainers.WordLevelTrainer(special_tokens=["<pad>", "</s>", "<unk>"]))
    t.post_processor, t.decoder = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)]), decoders.WordPiece(cleanup=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=t, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(0)
    m = T5ForConditionalGeneration(T5Config(vocab_size=len(tok), d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, dropout_rate=0.0,
                                            pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    x, y = tok(["Generate Scene Graph: " + s for s in sents], padding=True, return_tensors="pt"), tok(GRAPHS, padding=True, return_tensors="pt")["input_ids"]
    y[y == 0] = -100
    opt = torch.optim.AdamW(m.parameters(), lr=5e-3)
    for _ in range(120): loss = m(**x, labels=y).loss; opt.zero_grad(); loss.backward(); opt.step()
    m.save_pretrained(dest); tok.save_pretrained(dest)
    return dest

def paper_params(work: Path, url: str) -> dict:
    "The smoke profile with the paper-scale keys pointed at the tiny artefacts: values only."
    from reper.model import save_policy, tiny_llava15
    save_policy(*tiny_llava15([WORDS, "Can you provide a comprehensive caption for this image?"]), work / "ckpt/llava-1.5-tiny-hf")
    from reper.config import overlay, read_yaml
    raw = overlay(read_yaml(ROOT / "params.yaml"), read_yaml(ROOT / "profiles/smoke.yaml"))
    raw["data"].update(source="llava665k", root=str(write_records(work / "playground/data")), on_bad_image="skip")
    raw["model"].update(name_or_path=str(work / "ckpt/llava-1.5-tiny-hf"), max_length=1024)
    raw["candidates"].update(n_images=N_GOOD + 5, temperatures=TEMPS, batch_size=12, max_new_tokens=12)
    raw["judge"]["backend"] = "openai"
    raw["judge"]["openai"].update(base_url=url, api_key_env="REPER_PAPER_KEY", backoff_s=0.05, timeout_s=10)
    raw["references"].update(backend="openai", models=["gpt-4o", "gemini-1.5-pro"])
    raw["rule_score"].update(vocab="open", parser_model=str(write_parser(work / "ckpt/factual-tiny")), parser_beams=2, parser_max_new_tokens=40)
    raw["dialogue"].update(reward="mean", min_final_score=2.0)
    raw["sweep"]["online_methods"] = []  # GRPO's and VRE's rewards read scene graphs, which 665K records have not
    return raw

def run_stage(nb: str, work: Path):
    "One stage notebook under papermill, as its dvc.yaml cmd runs it (executed copy in runs/), the key in the environment."
    env = {**os.environ, "TQDM_DISABLE": "1", "REPER_PAPER_KEY": KEY, "OMP_NUM_THREADS": "1"}
    for d in ("runs", "reflection", "metrics"): (work / d).mkdir(exist_ok=True)
    r = subprocess.run([sys.executable, "-m", "papermill", str(ROOT / f"nbs/{nb}.ipynb"), str(work / f"runs/{nb}.ipynb"), "-p", "params_path",
                        "params.yaml", "--cwd", str(work), "-k", "python3", "--log-level", "WARNING"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{nb} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"

STAGES = ["20_candidates", "21_judge", "21a_references", "22_rule_score", "23_dialogues"]

@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    "The reflection-dataset stages run once on the tiny paper-scale setup: (work folder, loopback server, seconds per stage)."
    work, server = tmp_path_factory.mktemp("paper"), ChatServer([{"fn": judge_or_caption}])
    (work / "params.yaml").write_text(yaml.safe_dump(paper_params(work, server.url)))
    times = {}
    for nb in STAGES:
        t = time.time(); run_stage(nb, work); times[nb] = round(time.time() - t, 1)
    print(f"paper-scale stages: {times}, total {sum(times.values()):.0f} s")
    yield work, server, times
    server.close()

def read(work, name): return [json.loads(l) for l in (work / name).read_text().splitlines()]

def test_candidates_from_the_checkpoint_on_the_665k_sample(paper):
    "Every readable image record (the missing and the corrupt one counted, the text-only one never an item) x every temperature."
    work, _, _ = paper
    cands, m = read(work, "reflection/candidates.jsonl"), json.loads((work / "metrics/candidates.json").read_text())
    assert len(cands) == N_GOOD * len(TEMPS) and m["n_skipped"] == 2
    assert {c["id"] for c in cands} == {f"{k:012d}" for k in range(N_GOOD)} and {c["temperature"] for c in cands} == set(TEMPS)

def test_judge_and_references_through_the_endpoint_with_usage(paper):
    "One request per candidate and per (image, model), tokens and cost logged, every verdict and caption kept."
    work, server, _ = paper
    judged, refs = read(work, "reflection/judgements.jsonl"), read(work, "reflection/references.jsonl")
    assert all(1 <= j["score"] <= 10 and "dog" in j["reason"] for j in judged) and len(judged) == N_GOOD * len(TEMPS)
    assert [len(r["references"]) for r in refs] == [2] * N_GOOD and refs[0]["references"][1].endswith("(gemini-1.5-pro)")
    mj, mr = (json.loads((work / f"metrics/{n}.json").read_text()) for n in ("judge", "references"))
    assert (mj["requests"], mj["cache_hits"], mj["prompt_tokens"]) == (N_GOOD * len(TEMPS), 0, 100 * N_GOOD * len(TEMPS))
    assert (mr["requests"], mr["n_references"], mr["n_without_references"]) == (2 * N_GOOD, 2 * N_GOOD, 0)
    assert mj["cost_usd"] > 0 and mr["cost_usd"] > 0
    assert len(server.requests) == mj["requests"] + mr["requests"]
    assert {r["body"]["model"] for r in server.requests} == {"gpt-4o", "gemini-1.5-pro"}

def test_rule_scores_and_dialogues(paper):
    "The model parser's rule scores in [0, 1]; dialogues rise by min_gap, keep the paper's prompt and point at the 665K images."
    work, _, _ = paper
    p = yaml.safe_load((work / "params.yaml").read_text())
    rules = read(work, "reflection/rule_scores.jsonl")
    assert len(rules) == N_GOOD * len(TEMPS) and all(0.0 <= r["capture"] <= 1.0 for r in rules)
    assert json.loads((work / "metrics/rule_score.json").read_text())["mean_capture"] < 1.0  # the references parse into elements
    dias = read(work, "reflection/dialogues.jsonl")
    assert dias, "no dialogue"
    for d in dias:
        s = [t["judge_score"] for t in d["turns"]]
        assert all(b - a >= p["dialogue"]["min_gap"] for a, b in zip(s, s[1:])) and s[-1] >= p["dialogue"]["min_final_score"]
        assert d["messages"][0]["text"] == "Can you provide a comprehensive caption for this image?"
        assert (Path(p["data"]["root"]) / d["image"]).is_file()

def test_the_key_reaches_the_server_and_no_file(paper):
    "Every request carries the key; no file the stages wrote (executed notebooks, caches, metrics, records) contains it."
    work, server, _ = paper
    assert {r["auth"] for r in server.requests} == {f"Bearer {KEY}"}
    files = [f for f in work.rglob("*") if f.is_file()]
    assert len(list((work / "cache").rglob("*.json"))) == len(server.requests)
    assert {f"runs/{nb}.ipynb" for nb in STAGES} <= {str(f.relative_to(work)) for f in files}
    assert not [f for f in files if KEY.encode() in f.read_bytes()]

def test_rerun_is_all_cache_hits(paper):
    "The judge stage again: every verdict from the cache, no request, the same judgements."
    work, server, _ = paper
    before, n = (work / "reflection/judgements.jsonl").read_text(), len(server.requests)
    run_stage("21_judge", work)
    m = json.loads((work / "metrics/judge.json").read_text())
    assert (m["requests"], m["cache_hits"], m["cost_usd"]) == (0, N_GOOD * len(TEMPS), 0.0) and len(server.requests) == n
    assert (work / "reflection/judgements.jsonl").read_text() == before

def test_pretrain_records_the_given_checkpoint(paper):
    "Given model.name_or_path the pretrain stage trains nothing and copies no weights: a record, and dvclive files for DVC."
    work, _, _ = paper
    run_stage("10_pretrain", work)
    rec = json.loads((work / "models/base/base_policy.json").read_text())
    assert rec["name_or_path"] == str((work / "ckpt/llava-1.5-tiny-hf").resolve()) and rec["n_image_tokens"] == 576
    assert [f.name for f in (work / "models/base").iterdir()] == ["base_policy.json"]
    assert json.loads((work / "dvclive/pretrain/metrics.json").read_text())["base_policy"]["n_image_tokens"] == 576
    assert (work / "dvclive/pretrain/plots/metrics").is_dir()

def test_evaluate_base_on_665k_images(paper):
    "Without scene graphs the base policy's greedy captions give statistics only; bad images counted, not fatal."
    work, _, _ = paper
    run_stage("11_evaluate_base", work)
    m = json.loads((work / "metrics/base.json").read_text())
    assert (m["n_captions"], m["n_skipped"]) == (N_GOOD, 2) and m["mean_words"] > 0 and "obj_precision" not in m
