"The OpenAI-compatible judge against a real HTTP server on the loopback: replies, retries, timeouts, re-asks, the cache, the key."
import base64, io, json, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
import pytest
from PIL import Image
from conftest import params_with
from reper.judge import REASK, judge_captions, make_judge
from reper.feedback import JudgeItem
from reper.endpoint import JudgeError, usage_metrics
from reper.references import OpenAIReferences
from reper.scenes import make_scene

KEY = "sk-test-0123456789abcdef"  # a fake key; it must reach the server and nothing else

class ChatServer:
    "A chat-completions endpoint on 127.0.0.1: answers from `script` in order (the last entry repeats; `fn` computes the text from the request body), records every request."
    def __init__(self, script):
        self.script, self.requests = list(script), []
        srv = self
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a): pass
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                srv.requests.append(dict(path=self.path, auth=self.headers.get("Authorization"), body=body))
                step = srv.script[min(len(srv.requests), len(srv.script)) - 1]
                if step.get("sleep"): time.sleep(step["sleep"])
                status = step.get("status", 200)
                payload = step.get("raw") or json.dumps(
                    {"choices": [{"message": {"role": "assistant", "content": step["fn"](body) if "fn" in step else step.get("text", "")}}],
                     "usage": {"prompt_tokens": 100, "completion_tokens": 10}} if status == 200 else {"error": step.get("error", "busy")})
                payload = payload.replace("$AUTH", self.headers.get("Authorization", ""))
                try:
                    self.send_response(status)
                    for k, v in step.get("headers", {}).items(): self.send_header(k, v)
                    self.send_header("Content-Type", "application/json"); self.end_headers()
                    self.wfile.write(payload.encode())
                except (BrokenPipeError, ConnectionResetError): pass  # the client timed out and left
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True).start()
    def close(self): self.httpd.shutdown(); self.httpd.server_close()

@pytest.fixture
def serve():
    servers = []
    def start(*script):
        servers.append(ChatServer(script)); return servers[-1]
    yield start
    for s in servers: s.close()

@pytest.fixture(scope="module")
def items():
    p = params_with().data
    out = []
    for k in range(2):
        scene, img = make_scene(k, p)
        out.append(JudgeItem(scene.references[0], scene.instruction, img, scene))
    return out

def judge_for(server, tmp_path, monkeypatch, **op):
    "An `OpenAIJudge` on `server`, its cache under `tmp_path`, the key in the environment, sleeps recorded."
    monkeypatch.setenv("REPER_TEST_KEY", KEY)
    jp = params_with({"judge": {"backend": "openai", "unparseable_retries": op.pop("unparseable_retries", 2),
                                 "openai": dict(dict(base_url=server.url, api_key_env="REPER_TEST_KEY", cache_dir=str(tmp_path / "cache"),
                                                     backoff_s=0.05, timeout_s=5), **op)}}).judge
    j = make_judge(jp)
    j.client.sleep = lambda s: (j.waits.append(s), time.sleep(s))  # the endpoint client (reper.endpoint) does the waiting
    j.waits = []
    return j

OK = {"text": "Score: 7\nReason: It misses the small star."}

def test_normal_reply_and_request_shape(serve, items, tmp_path, monkeypatch):
    s = serve(OK)
    j = judge_for(s, tmp_path, monkeypatch)
    [v] = j(items[:1])
    assert (v.score, v.reason, v.attempts) == (7, "It misses the small star.", 1)
    [r] = s.requests
    assert r["path"] == "/v1/chat/completions" and r["auth"] == f"Bearer {KEY}"
    assert r["body"]["model"] == "gpt-4o" and r["body"]["max_tokens"] == 300
    text, img = r["body"]["messages"][0]["content"]
    assert items[0].caption in text["text"] and "Authenticity (4 points)" in text["text"] and "Correctness (2 points)" in text["text"]
    png = base64.b64decode(img["image_url"]["url"].removeprefix("data:image/png;base64,"))
    assert Image.open(io.BytesIO(png)).tobytes() == items[0].image.tobytes()
    assert (j.usage["requests"], j.usage["prompt_tokens"], j.usage["completion_tokens"], j.usage["cache_hits"]) == (1, 100, 10, 0)

def test_429_then_success_honours_retry_after(serve, items, tmp_path, monkeypatch):
    s = serve({"status": 429, "headers": {"Retry-After": "0.2"}}, OK)
    j = judge_for(s, tmp_path, monkeypatch)
    assert j(items[:1])[0].score == 7
    assert j.waits == [0.2] and (j.usage["requests"], j.usage["retries"]) == (2, 1)

def test_5xx_backs_off_exponentially_then_gives_up_naming_url_and_status(serve, items, tmp_path, monkeypatch):
    s = serve({"status": 503})
    j = judge_for(s, tmp_path, monkeypatch, max_retries=3)
    with pytest.raises(JudgeError, match=r"POST http://127\.0\.0\.1:\d+/v1/chat/completions: gave up after 4 attempts; last: HTTP 503"):
        j(items[:1])
    assert j.waits == [0.05, 0.1, 0.2] and len(s.requests) == 4
    assert not list((tmp_path / "cache").glob("*.json"))  # a failure is not cached

def test_timeout_then_success(serve, items, tmp_path, monkeypatch):
    "The first reply takes 10 s, the client gives up on it after 0.3 s and asks again (never waiting the 10 s, however loaded the machine)."
    s = serve({"sleep": 10, **OK}, OK)
    j = judge_for(s, tmp_path, monkeypatch, timeout_s=0.3, max_retries=1)
    t = time.time()
    assert j(items[:1])[0].score == 7
    assert j.usage["retries"] == 1 and len(s.requests) == 2 and time.time() - t < 9

def test_timeout_without_retries_is_an_error(serve, items, tmp_path, monkeypatch):
    s = serve({"sleep": 1.5, **OK})
    j = judge_for(s, tmp_path, monkeypatch, timeout_s=0.3, max_retries=0)
    with pytest.raises(JudgeError, match=r"/v1/chat/completions: gave up after 1 attempts; last: .*timed out"):
        j(items[:1])

def test_client_errors_stop_at_once_and_never_show_the_key(serve, items, tmp_path, monkeypatch):
    s = serve({"status": 401, "raw": '{"error": "bad key $AUTH"}'})  # a server that echoes the header back
    j = judge_for(s, tmp_path, monkeypatch)
    with pytest.raises(JudgeError, match=r"/v1/chat/completions: HTTP 401") as e:
        j(items[:1])
    assert KEY not in str(e.value) and "[api key]" in str(e.value) and len(s.requests) == 1

def test_missing_key_names_the_variable(serve, items, tmp_path, monkeypatch):
    s = serve(OK)
    j = judge_for(s, tmp_path, monkeypatch)
    monkeypatch.delenv("REPER_TEST_KEY")
    with pytest.raises(JudgeError, match="environment variable REPER_TEST_KEY is not set"):
        j(items[:1])
    assert s.requests == []

def test_unparseable_reply_is_reasked_then_unscored(serve, items, tmp_path, monkeypatch):
    s = serve({"text": "What a lovely picture!"})
    j = judge_for(s, tmp_path, monkeypatch, unparseable_retries=2)
    [v] = j(items[:1])
    assert (v.score, v.attempts, v.raw) == (None, 3, "What a lovely picture!")
    assert (j.usage["requests"], j.usage["unparseable"], j.usage["unscored"]) == (3, 3, 1)
    last = s.requests[-1]["body"]["messages"]
    assert [m["role"] for m in last] == ["user", "assistant", "user", "assistant", "user"] and last[-1]["content"] == REASK

def test_reask_then_scored(serve, items, tmp_path, monkeypatch):
    s = serve({"text": "Nice."}, {"text": "**Score**: 4/10\n**Reason**: The cross is yellow."})
    j = judge_for(s, tmp_path, monkeypatch)
    [v] = j(items[:1])
    assert (v.score, v.reason, v.attempts) == (4, "The cross is yellow.", 2)
    assert (j.usage["unparseable"], j.usage["unscored"]) == (1, 0)

def test_cache_hit_makes_no_request_and_needs_no_key(serve, items, tmp_path, monkeypatch):
    s = serve(OK)
    first = judge_captions(judge_for(s, tmp_path, monkeypatch), items, progress=False)
    assert len(s.requests) == 2
    j = judge_for(s, tmp_path, monkeypatch)
    monkeypatch.delenv("REPER_TEST_KEY")
    assert judge_captions(j, items, progress=False) == first
    assert len(s.requests) == 2 and (j.usage["cache_hits"], j.usage["requests"]) == (2, 0)
    other = judge_for(s, tmp_path, monkeypatch, model="another-model")  # the model is part of the key
    other(items[:1]); assert len(s.requests) == 3

def test_key_reaches_the_server_and_no_file(serve, items, tmp_path, monkeypatch):
    s = serve({"text": "Score: 6\nReason: fine"}, {"text": "no score here"}, {"text": "Score: 5\nReason: ok"})
    j = judge_for(s, tmp_path, monkeypatch)
    out = judge_captions(j, items, progress=False)
    (tmp_path / "judgements.jsonl").write_text("".join(json.dumps(v.__dict__) + "\n" for v in out))
    (tmp_path / "usage.json").write_text(json.dumps(dict(j.usage)))
    assert {r["auth"] for r in s.requests} == {f"Bearer {KEY}"}
    files = [f for f in tmp_path.rglob("*") if f.is_file()]
    assert len(files) >= 4 and not [f for f in files if KEY.encode() in f.read_bytes()]
    assert KEY not in repr(j.__dict__)

def test_reference_captions_one_request_per_model_then_cached(serve, items, tmp_path, monkeypatch):
    "Each model of `references.models` is asked the item's instruction about its image; a rerun is all cache hits."
    s = serve({"fn": lambda body: f"A caption by {body['model']}."})
    monkeypatch.setenv("REPER_TEST_KEY", KEY)
    op = params_with({"judge": {"openai": dict(base_url=s.url, api_key_env="REPER_TEST_KEY", cache_dir=str(tmp_path / "cache"),
                                               usd_per_mtok_prompt=2.5, usd_per_mtok_completion=10.0)}}).judge.openai
    refs = OpenAIReferences(op, ["gpt-4o", "gemini-1.5-pro"], max_tokens=500)
    got = refs([it.instruction for it in items], [it.image for it in items])
    assert got == [["A caption by gpt-4o.", "A caption by gemini-1.5-pro."]] * 2
    assert [r["body"]["model"] for r in s.requests] == ["gpt-4o", "gemini-1.5-pro"] * 2
    text, img = s.requests[0]["body"]["messages"][0]["content"]
    assert text["text"] == items[0].instruction and img["image_url"]["url"].startswith("data:image/png;base64,")
    assert {r["body"]["max_tokens"] for r in s.requests} == {500} and {r["auth"] for r in s.requests} == {f"Bearer {KEY}"}
    u = usage_metrics(refs.usage, op)
    assert (u["requests"], u["prompt_tokens"], u["completion_tokens"], u["cache_hits"]) == (4, 400, 40, 0)
    assert u["cost_usd"] == round((400 * 2.5 + 40 * 10.0) / 1e6, 6)
    again = OpenAIReferences(op, ["gpt-4o", "gemini-1.5-pro"])
    monkeypatch.delenv("REPER_TEST_KEY")
    assert again([it.instruction for it in items], [it.image for it in items]) == got
    assert len(s.requests) == 4 and usage_metrics(again.usage)["cache_hits"] == 4
