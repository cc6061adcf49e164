"""The HTML report: self-contained, escaped, and showing the right tokens in context."""

import base64
import io
import re
from html.parser import HTMLParser
from types import SimpleNamespace

import numpy as np
import pytest
from planted import Activations, PlantedHierarchy
from sklearn.utils._param_validation import InvalidParameterError

from sklearn_hsae import HierarchicalSparseAutoencoder, SparseAutoencoder
from sklearn_hsae.datasets import make_hierarchical_activations
from sklearn_hsae.metrics import level_names
from sklearn_hsae.report import hierarchy_report
from sklearn_hsae.report._plots import _COLUMN_INCHES, _ROW_INCHES
from sklearn_hsae.report._subtree import child_lists, subtree_layout

SPECIAL = {44: "<script>alert(1)</script>", 45: '"quoted"', 46: "a & b", 30: "<b>bold</b>",
           31: "\n", 47: "&amp;", 101: "</mark>"}


class ReportParser(HTMLParser):
    """Latent headings (and their parents), examples as (value, [(token, highlighted)])."""

    def __init__(self):
        super().__init__()
        self.links, self.latents, self.parent_of, self.dead, self.summary = [], {}, {}, {}, []
        self.stack = []  # names of the open sections / details, innermost last
        self.example = self.capture = None  # capture: [kind, text, tag that ends it]

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.links += [(tag, attrs[a]) for a in ("src", "href") if a in attrs]
        cls = attrs.get("class", "")
        if tag in ("section", "details"):
            self.stack.append(None)  # named by its heading
        if tag in ("h3", "summary"):
            self.capture = ["heading", "", tag]
        elif tag == "div" and cls == "ex":
            self.example = ["", []]
            self.latents[self.stack[-1]].append(self.example)
        elif tag == "span" and cls == "v":
            self.capture = ["value", "", tag]
        elif tag in ("span", "mark") and self.example is not None and not cls:
            self.example[1].append(["", tag == "mark"])
        elif tag == "div" and cls == "dead":
            self.capture = ["dead", "", tag]
        elif tag == "td":
            self.capture = ["td", "", tag]

    def handle_endtag(self, tag):
        if self.capture is not None and tag == self.capture[2]:
            kind, text, _ = self.capture
            self.capture = None
            if kind == "heading":
                name = " ".join(text.split()[:2])  # "parent 2" without the density
                self.stack[-1] = name
                self.latents[name] = []
                self.parent_of[name] = self.stack[-2] if len(self.stack) > 1 else None
            elif kind == "value":
                self.example[0] = text
            elif kind == "dead":
                self.dead[self.stack[-1]] = text
            else:
                self.summary.append(text)
        elif tag == "div":
            self.example = None
        if tag in ("section", "details"):
            self.stack.pop()

    def handle_data(self, data):
        if self.capture is not None:
            self.capture[1] += data
        elif self.example is not None and self.example[1]:
            self.example[1][-1][0] += data


def parse(path):
    parser = ReportParser()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def planted(rows_order=None):
    """4 parents x 2 children over 10 documents of 30 tokens, with planted firings."""
    n = 300
    X = np.zeros((n, 12))
    X[:100, 0] = 0.1  # parent 0: densest
    X[100:120, 1] = 0.2  # parent 1
    for row, value in {45: 9.0, 100: 8.0, 30: 7.0, 200: 1.0, 201: 0.5}.items():
        X[row, 2] = value  # parent 2: top rows 45, 100, 30
    X[46, 4 + 5], X[150, 4 + 5] = 5.0, 2.0  # child 5 (parent 2); child 4 never fires
    tokens = [SPECIAL.get(i, f"w{i}") for i in range(n)]
    doc, position = np.arange(n) // 30, np.arange(n) % 30
    order = np.arange(n) if rows_order is None else rows_order
    acts = Activations(X[order], [tokens[i] for i in order], doc[order], position[order])
    return PlantedHierarchy([4, 8], [np.repeat(np.arange(4), 2)]), acts, tokens


def tokens_of(example):
    return [tok for tok, _ in example[1]], [tok for tok, mark in example[1] if mark]


@pytest.fixture(scope="module")
def planted_report(tmp_path_factory):
    estimator, acts, tokens = planted()
    path = hierarchy_report(estimator, acts, tmp_path_factory.mktemp("r") / "planted.html",
                            n_shown_parents=3, n_examples=3, context=3)
    return path, parse(path), tokens


def test_report_is_self_contained(planted_report):
    path, parsed, _ = planted_report
    raw = path.read_text(encoding="utf-8")
    assert parsed.links, "the table of contents links the sections"
    for tag, target in parsed.links:
        assert target.startswith(("data:", "#")), (tag, target[:60])
    assert not re.search(r"<(script|link|iframe|object|embed)\b", raw, re.I)
    assert "://" not in raw and "@import" not in raw and "url(" not in raw
    pngs = sorted(path.parent.glob("planted_*.png"))
    assert [p.name for p in pngs] == ["planted_density.png", "planted_fvu_l0.png"]
    embedded = [base64.b64decode(t[len("data:image/png;base64,"):]) for tag, t in parsed.links
                if tag == "img"]
    # The two summary plots are the files beside the page; a subtree follows per listed parent.
    assert embedded[:2] == [p.read_bytes() for p in pngs] and len(embedded) == 2 + 3
    assert all(png.startswith(b"\x89PNG\r\n\x1a\n") for png in embedded)


def test_every_token_is_escaped(planted_report):
    path, parsed, _ = planted_report
    raw = path.read_text(encoding="utf-8")
    assert "<b>bold" not in raw and "</mark>\n" not in raw and '"quoted"' not in raw
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in raw and "a &amp; b" in raw
    assert "&amp;amp;" in raw  # a token that looks like an entity stays literal text
    for amp in re.finditer(r"&", raw):  # every & starts an entity
        assert re.match(r"&(amp|lt|gt|quot|#x27|middot);", raw[amp.start():]), raw[amp.start():][:20]
    shown = {tok for examples in parsed.latents.values() for ex in examples for tok in tokens_of(ex)[0]}
    assert {"<script>alert(1)</script>", '"quoted"', "a & b", "<b>bold</b>", "\u21b5", "&amp;"} <= shown


def test_top_tokens_in_context_are_the_planted_ones(planted_report):
    _, parsed, tokens = planted_report
    assert list(parsed.latents)[:3] == ["parent 0", "parent 1", "parent 2"]  # by density
    assert "parent 3" not in parsed.latents  # n_shown_parents=3
    examples = parsed.latents["parent 2"]
    assert [float(v) for v, _ in examples] == [9.0, 8.0, 7.0]
    context, marked = tokens_of(examples[0])  # row 45: rows 42..48 of document 1
    assert context == [tokens[i] for i in range(42, 49)] and marked == ['"quoted"']
    context, marked = tokens_of(examples[1])  # row 100: rows 97..103 of document 3
    assert context == [tokens[i] for i in range(97, 104)] and marked == ["w100"]
    context, marked = tokens_of(examples[2])  # row 30 opens document 1: nothing before it
    assert context == ["<b>bold</b>", "\u21b5", "w32", "w33"] and marked == ["<b>bold</b>"]
    # Parent 2's children: child 5 with its own top tokens; child 4 listed as dead.
    assert [name for name in parsed.latents if name.startswith("child")] == ["child 5"]
    child = parsed.latents["child 5"]
    assert [float(v) for v, _ in child] == [5.0, 2.0]
    assert tokens_of(child[0]) == ([tokens[i] for i in range(43, 50)], ["a & b"])
    assert parsed.dead["parent 2"].strip() == "dead child: 4"
    assert parsed.dead["parent 0"].strip() == "dead child: 0, 1"


def test_summary_numbers(planted_report):
    path, parsed, _ = planted_report
    # level, latents, L0, dead, dense, without parent
    assert parsed.summary == ["parent", "4", f"{(100 + 20 + 5) / 300:.2f}", "25.0%", "25.0%", "-",
                              "child", "8", f"{3 / 300:.2f}", "87.5%", "0.0%", "0"]
    assert "FVU <b>0.0000</b>" in path.read_text()  # the planted decoder is exact


def test_contexts_follow_documents_not_row_order(planted_report, tmp_path):
    _, parsed, _ = planted_report
    estimator, acts, _ = planted(np.random.default_rng(0).permutation(300))
    shuffled = parse(hierarchy_report(estimator, acts, tmp_path / "s.html", n_shown_parents=3,
                                      n_examples=3, context=3))
    assert shuffled.latents["parent 2"] == parsed.latents["parent 2"]
    assert shuffled.latents["child 5"] == parsed.latents["child 5"]


def test_deeper_trees_nest_and_count_unassigned(tmp_path):
    X = np.zeros((60, 2 + 4 + 8))
    X[:30, 0], X[30:, 1] = 1.0, 1.0  # two parents
    X[np.arange(60), 2 + np.arange(60) % 4] = 1.0  # every level-1 latent fires
    X[np.arange(60), 6 + np.arange(60) % 8] = 1.0  # every level-2 latent fires
    level1, level2 = np.array([0, 0, 1, -1]), np.array([0, 0, 1, 2, 3, -1, -1, 2])
    acts = Activations(X, [f"t{i}" for i in range(60)], np.zeros(60, int), np.arange(60))
    for maps in ([level1, level2], [np.full(2, -1), level1, level2]):
        path = hierarchy_report(PlantedHierarchy([2, 4, 8], maps), acts, tmp_path / "t.html")
        parsed = parse(path)
        assert parsed.summary[-1] == "2" and parsed.summary[-7] == "1"  # -1 entries per level
        names = list(parsed.latents)
        # Children by density; level1 3 and level2 5, 6 hang nowhere and are not shown.
        assert names == ["level0 0", "level1 0", "level2 0", "level2 1", "level1 1", "level2 2",
                         "level0 1", "level1 2", "level2 3", "level2 7"]
        assert parsed.parent_of["level2 2"] == "level1 1"
        assert parsed.parent_of["level1 2"] == "level0 1"


def test_real_estimators_flat_and_hierarchical(tmp_path):
    X, *_ = make_hierarchical_activations(n_samples=600, n_features=16, n_parents=6, n_children=3,
                                          subspace_dim=2, n_active=2, random_state=0)
    acts = SimpleNamespace(X=X, tokens=[f"<t{i}>" for i in range(600)],
                           doc_index=np.arange(600) // 60, position=np.arange(600) % 60)
    sae = SparseAutoencoder(n_components=10, k=2, max_iter=2, batch_size=128, random_state=0)
    parsed = parse(hierarchy_report(sae.fit(X), acts, tmp_path / "flat.html", n_shown_parents=4))
    assert list(parsed.latents) == [f"latent {j}" for j in
                                    np.argsort(-(sae.transform(X) != 0).sum(0).A1, kind="stable")[:4]]
    hsae = HierarchicalSparseAutoencoder(n_parents=6, n_children=3, subspace_dim=2, k=2,
                                         max_iter=2, batch_size=128, random_state=0).fit(X)
    path = hierarchy_report(hsae, acts, tmp_path / "hsae.html", sort="index", title="<H-SAE>")
    parsed = parse(path)
    assert "<title>&lt;H-SAE&gt;</title>" in path.read_text()
    assert [n for n in parsed.latents if n.startswith("parent")] == [f"parent {p}" for p in range(6)]
    fires = (hsae.encode(X).child != 0).sum(0).A1
    children = [n for n in parsed.latents if n.startswith("child")]
    assert sorted(int(n.split()[1]) for n in children) == list(np.flatnonzero(fires))
    for name in children:  # every live child under its own parent, with its top tokens
        c = int(name.split()[1])
        assert parsed.parent_of[name] == f"parent {hsae.child_parent_[c]}"
        assert len(parsed.latents[name]) == min(5, fires[c])


def test_report_rejects_bad_input(tmp_path):
    estimator, acts, _ = planted()
    with pytest.raises(TypeError, match="lacks doc_index, position"):
        hierarchy_report(estimator, SimpleNamespace(X=acts.X, tokens=acts.tokens), tmp_path / "a")
    short = Activations(acts.X, acts.tokens[:-1], acts.doc_index, acts.position)
    with pytest.raises(ValueError, match="tokens has 299 entries for 300 rows"):
        hierarchy_report(estimator, short, tmp_path / "a.html")
    with pytest.raises(InvalidParameterError, match="sort"):
        hierarchy_report(estimator, acts, tmp_path / "a.html", sort="size")


def test_tree_levels_reconstruct_on_their_own(tmp_path):
    X, *_ = make_hierarchical_activations(n_samples=600, random_state=0)
    n = len(X)
    acts = Activations(X, np.array([f"t{i}" for i in range(n)], dtype=object),
                       np.arange(n) // 20, np.arange(n) % 20)
    est = HierarchicalSparseAutoencoder(architecture="tree", n_parents=6, n_children=2, k=3,
                                        max_iter=2, random_state=0).fit(X)
    page = hierarchy_report(est, acts, tmp_path / "tree.html", n_shown_parents=2).read_text()
    codes = est.encode(X)
    for level, name in enumerate(("parent", "child")):
        X_hat = codes.levels[level] @ est.components_by_level_[level] + est.intercept_by_level_[level]
        value = ((X - X_hat) ** 2).sum() / ((X - X.mean(0)) ** 2).sum()
        assert f"{name} <b>{value:.4f}</b>" in page  # one FVU per level, each level alone


def subtree_images(raw):
    """Per listed parent (by id), the (alt, PNG bytes) of every image in its section."""
    sections = re.findall(r'<section class="latent" id="l0-(\d+)">(.*?)</section>', raw, re.S)
    return {int(p): [(alt, base64.b64decode(data)) for alt, data in
                     re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,([^"]*)"', body)]
            for p, body in sections}


def descendants(parent_index_by_level, root):
    """Nodes and edges under root, walked level by level from the parent maps alone."""
    nodes, edges, frontier = {(0, root)}, set(), {root}
    for level in range(1, len(parent_index_by_level)):
        parent = np.asarray(parent_index_by_level[level])
        below = {int(c) for c in np.flatnonzero(np.isin(parent, list(frontier)))}
        nodes |= {(level, c) for c in below}
        edges |= {((level - 1, int(parent[c])), (level, c)) for c in below}
        frontier = below
    return nodes, edges


def assert_tidy(layout):
    """A column per level, a row per leaf, every parent midway between its end children."""
    xy = dict(zip(layout.nodes, layout.xy))
    assert all(xy[node][0] == node[0] for node in layout.nodes)
    kids = {n: [c for a, c in layout.edges if a == n] for n in layout.nodes}
    leaves = sorted(xy[n][1] for n in layout.nodes if not kids[n])
    assert leaves == list(range(len(leaves)))
    for node, under in kids.items():
        if under:
            assert xy[node][1] == (xy[under[0]][1] + xy[under[-1]][1]) / 2


@pytest.mark.parametrize("params", [dict(architecture="tree", n_levels=3, reparent_every=20),
                                    dict(architecture="routed", subspace_dim=2)])
def test_every_listed_parent_gets_its_subtree_drawn(params, tmp_path):
    """One PNG per listed parent, of exactly the subtree that parent_index_by_level_ holds."""
    from matplotlib.image import imread

    X, *_ = make_hierarchical_activations(n_samples=1500, n_features=16, n_parents=4, n_children=3,
                                          subspace_dim=2, n_active=2, random_state=0)
    est = HierarchicalSparseAutoencoder(n_parents=4, n_children=3, k=2, max_iter=5, batch_size=128,
                                        random_state=0, **params).fit(X)
    acts = Activations(X, [f"t{i % 97}" for i in range(1500)], np.arange(1500) // 30,
                       np.arange(1500) % 30)
    path = hierarchy_report(est, acts, tmp_path / "tree.html", n_shown_parents=3)
    images, parsed = subtree_images(path.read_text()), parse(path)
    index = est.parent_index_by_level_
    names = level_names(len(index))
    assert len(images) == 3 and all(len(found) == 1 for found in images.values())
    for p, [(alt, png)] in images.items():
        nodes, edges = descendants(index, p)
        assert alt == f"subtree of {names[0]} {p}: {len(nodes)} latents, {len(edges)} edges"
        layout = subtree_layout(child_lists(index), p)
        pixels = imread(io.BytesIO(png), format="png")  # (h, w, RGBA) at 100 dpi
        n_rows = sum(not any(a == n for a, _ in edges) for n in nodes)  # a row per leaf
        n_columns = max(level for level, _ in nodes) + 1  # a column per level
        assert pixels.shape == pytest.approx(
            (100 * (_ROW_INCHES * n_rows + 0.1), 100 * (_COLUMN_INCHES * n_columns + 0.3), 4), abs=1)
        assert (pixels[..., :3] < 0.5).any()  # something is drawn on the white page
        assert set(layout.nodes) == nodes and len(layout.nodes) == len(nodes)
        assert set(layout.edges) == edges and len(layout.edges) == len(edges)
        assert_tidy(layout)
    # Down to the finest level, every shown latent sits under its parent from the maps.
    for heading, parent in parsed.parent_of.items():
        kind, latent = heading.split()
        depth = names.index(kind)
        assert parent == (None if depth == 0 else f"{names[depth - 1]} {index[depth][int(latent)]}")
    assert {heading.split()[0] for heading in parsed.parent_of} == set(names)


def test_a_dead_latent_with_a_live_descendant_keeps_its_place(tmp_path):
    # level1 0 never fires but its child level2 0 does (tree levels are separate SAEs).
    X = np.zeros((20, 1 + 2 + 2))
    X[:10, 0], X[:5, 3] = 1.0, 2.0
    acts = Activations(X, [f"t{i}" for i in range(20)], np.zeros(20, int), np.arange(20))
    estimator = PlantedHierarchy([1, 2, 2], [np.array([0, 0]), np.array([0, 1])])
    path = hierarchy_report(estimator, acts, tmp_path / "d.html")
    parsed = parse(path)
    assert list(parsed.latents) == ["level0 0", "level1 0", "level2 0"]
    assert parsed.parent_of["level2 0"] == "level1 0" and parsed.latents["level1 0"] == []
    assert "level1 0 <span class=\"muted small\">never fires</span>" in path.read_text()
    assert parsed.dead["level0 0"].strip() == "dead level1: 1"  # nothing under it fires
    [(alt, _)] = subtree_images(path.read_text())[0]
    assert alt == "subtree of level0 0: 5 latents, 4 edges"  # dead nodes are drawn too


def test_verbose_draws_a_bar_and_quiet_prints_nothing(tmp_path, capfd):
    estimator, acts, _ = planted()
    hierarchy_report(estimator, acts, tmp_path / "q.html", n_shown_parents=3)
    assert capfd.readouterr().err == ""
    hierarchy_report(estimator, acts, tmp_path / "v.html", n_shown_parents=3, verbose=1)
    err = capfd.readouterr().err
    assert "report:" in err and "/5 [" in err  # encoding, summary, then 3 listed parents
    assert re.search(r"\[\d\d:\d\d<[?\d]", err) and "step/s" in err  # elapsed<left, rate
