"The docs site that `reper-docs` builds from the smoke pipeline's outputs: every notebook a page, every image and link there, nothing loaded from another host."
import json, re, time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit
import pytest
from nbdev.config import nbpath2html
from conftest import ROOT, run

@pytest.fixture(scope="session")
def site(smoke) -> Path:
    "The site built by `reper-docs` in the smoke copy (a fresh clone: npm packages fetched, notebooks executed)."
    t, params = time.time(), smoke / "params.yaml"
    smoke_params = params.read_text()
    params.write_text((ROOT / "params.yaml").read_text())  # the library pages' examples run on the shipped params, as a user's build does
    try: r = run(["reper-docs"], smoke, timeout=900)
    finally: params.write_text(smoke_params)               # the results pages are the smoke pipeline's
    print(f"reper-docs: {time.time() - t:.1f} s\n{r.stdout}{r.stderr}")
    return smoke / "site"

class Page(HTMLParser):
    "The ids, references (tag, attribute, value), style text and inline scripts of one HTML page."
    def __init__(self, path: Path):
        super().__init__(convert_charrefs=True)
        self.ids, self.refs, self.css, self.scripts, self._in = set(), [], [], [], None
        self.feed(path.read_text())
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.ids |= {a[k] for k in ("id", "name") if a.get(k)}
        self.refs += [(tag, k, a[k]) for k in ("src", "href", "data") if a.get(k) is not None]
        if a.get("style"): self.css.append(a["style"])
        self._in = tag if tag in ("style", "script") else None
    def handle_endtag(self, tag): self._in = None
    def handle_data(self, data):
        if self._in: (self.css if self._in == "style" else self.scripts).append(data)

@pytest.fixture(scope="session")
def pages(site) -> dict:
    return {p: Page(p) for p in sorted(site.rglob("*.html"))}

def is_remote(url: str) -> bool: return bool(re.match(r"^(https?:)?//", url.strip(), re.I))
def is_internal(url: str) -> bool: return not (is_remote(url) or re.match(r"^[a-z][a-z0-9+.-]*:", url, re.I))  # not data:, mailto:, ...

def title(nb: Path) -> str:
    "The H1 of a notebook's first markdown cell."
    cells = json.loads(nb.read_text())["cells"]
    md = next("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    return re.search(r"^#\s+(.+)$", md, re.M)[1].strip()

def test_every_notebook_is_a_page(smoke, site):
    "Library notebooks (nbs/, not stage notebooks) under api/, executed stage notebooks (runs/) under results/."
    nbs = [p for p in sorted((smoke / "nbs").glob("*.ipynb")) if not p.name.startswith(("_", ".")) and p.stem != "index"]
    stage = [p for p in nbs if json.loads(p.read_text())["metadata"].get("nbdev", {}).get("skip_exec")]
    library = [p for p in nbs if p not in stage]
    runs = sorted((smoke / "runs").glob("*.ipynb"))
    per_variant = {"41_variant.ipynb", "41a_online_variant.ipynb"}  # run once per sweep variant, into runs/variants/ (gathered by the analysis page)
    assert library and runs and {p.name for p in stage} - per_variant == {p.name for p in runs}, "every stage notebook has an executed copy"
    assert list((smoke / "runs/variants").glob("*.ipynb"))
    for nb, page in [(p, site / "api" / nbpath2html(p.name)) for p in library] + \
                    [(p, site / "results" / f"{p.stem}.html") for p in runs]:
        assert page.exists(), f"{nb.name} has no page {page.relative_to(site)}"
        html = page.read_text()
        assert f">{title(nb)}<" in html.replace("<code>", "").replace("</code>", ""), f"{page.name}: no heading {title(nb)!r}"
    assert 'class="jp-Notebook"' in (site / "results" / f"{runs[0].stem}.html").read_text()

def test_library_pages_have_reference_and_example_outputs(site):
    "nbdev's show_doc wrote signatures and docstrings; the examples ran (plots page: a figure)."
    cfg = (site / "api/config.html").read_text()
    assert "def parse_params(" in re.sub(r"<[^>]+>", "", cfg) and 'id="parse_params"' in cfg
    assert re.search(r'<img[^>]+src="data:image/png', (site / "api/plots.html").read_text())

def test_results_pages_have_tables_and_figures(smoke, site):
    html = (site / "results/11_evaluate_base.html").read_text()
    assert 'class="dataframe"' in html and re.search(r'<img[^>]+src="data:image/png', html)
    noisy = [p.name for p in (site / "results").glob("*.html") if "IProgress not found" in p.read_text()]
    assert not noisy, f"tqdm's ipywidgets warning shown on {noisy}"

def test_front_page(site):
    "README, pipeline graph from `dvc dag`, paper scale, metrics, links to every results and library page and the training curves."
    html = (site / "index.html").read_text()
    assert "Two commands" in html and "Paper scale" in html
    svg = (site / "assets/pipeline.svg").read_text()
    assert 'src="assets/pipeline.svg"' in html and all(f">{s}<" in svg for s in ("data.dvc", "pretrain", "evaluate_base")), "dvc dag"
    for p in list((site / "results").glob("*.html")) + list((site / "api").glob("*.html")):
        assert f'href="{p.relative_to(site)}"' in html, p.name
    assert 'href="plots/index.html"' in html
    assert "metrics/base.json" in html and "obj_precision" in html, "dvc metrics show"

def test_every_image_exists(site, pages):
    missing = [(str(p.relative_to(site)), v) for p, pg in pages.items() for t, a, v in pg.refs
               if t in ("img", "source") and a == "src" and is_internal(v) and not (p.parent / unquote(urlsplit(v).path)).is_file()]
    assert not missing, missing
    assert any(t == "img" for pg in pages.values() for t, _, _ in pg.refs)

def test_internal_links_resolve(site, pages):
    "Every relative href/src names a file of the site, and every #fragment an id on the target page."
    bad = []
    for p, pg in pages.items():
        for t, a, v in pg.refs:
            if not is_internal(v) or not v.strip(): continue
            u = urlsplit(v)
            target = (p.parent / unquote(u.path)).resolve() if u.path else p
            if target.is_dir(): target = target / "index.html"
            if not target.is_file() or site.resolve() not in target.parents: bad.append((str(p.relative_to(site)), v, "no file")); continue
            if u.fragment and target.suffix == ".html" and target in pages and unquote(u.fragment) not in pages[target].ids:
                bad.append((str(p.relative_to(site)), v, "no such id"))
    assert not bad, bad[:40]

def test_nothing_loads_from_other_hosts(site, pages):
    "No script, stylesheet, font, image or frame from another host (links to other sites are fine)."
    remote = [(str(p.relative_to(site)), t, v) for p, pg in pages.items() for t, a, v in pg.refs if t != "a" and is_remote(v)]
    css = [(str(p.relative_to(site)), c) for p, pg in pages.items() for c in pg.css if re.search(r"url\(\s*['\"]?(https?:)?//|@import", c)]
    css += [(str(f.relative_to(site)), "") for f in site.rglob("*.css") if re.search(r"url\(\s*['\"]?(https?:)?//|@import\s+(url\()?['\"]?(https?:)?//", f.read_text())]
    imports = [(str(p.relative_to(site)), s[:200]) for p, pg in pages.items() for s in pg.scripts if re.search(r"import\(\s*['\"](https?:)?//", s)]
    assert not remote and not css and not imports, (remote[:20], css[:20], imports[:5])
    index = (site / "index.html").read_text()
    assert "fonts.googleapis" not in index and "fonts.gstatic" not in index
    for js in ("assets/vendor/mathjax/tex-mml-svg.js", "assets/vendor/vega/vega.min.js", "assets/javascripts/mathjax-config.js"):
        assert (site / js).is_file(), js
    assert "[mathjax]/fonts" in (site / "assets/javascripts/mathjax-config.js").read_text()
    assert list((site / "assets/vendor/mathjax/fonts/mathjax-newcm-font/svg/dynamic").glob("*.js")), "MathJax's glyphs on demand"

def test_training_curves_page_uses_local_vega(site):
    html = (site / "plots/index.html").read_text()
    assert "vega-embed" in html and "cdn.jsdelivr" not in html
    assert re.search(r'<script src="\.\./assets/vendor/vega/vega-embed\.min\.js">', html)
