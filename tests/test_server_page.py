"""The status page's script, run under Node.js against a live node.

A few dozen lines of fake DOM stand in for the browser; ``fetch``, ``Headers`` and the
stream classes are Node's own. The script must render replicas, entities and the
dependency graph, follow the event stream (with the token when the node has one), keep
entity ids as text (never markup), and ask for the token after a 401. Skipped where
Node.js is not installed.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from sphaera_crdt.net.status_page import load_status_page
from sphaera_crdt.node import Node, NodeConfig

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js"),
]

#: The fake browser. argv: base URL, location.hash, script file, and a JSON object of
#: element id -> text it must show before the harness reports what the page shows.
HARNESS = r"""
const fs = require("fs");
const vm = require("vm");
const [base, hash, scriptPath, awaitedJson] = process.argv.slice(2);
const awaited = Object.entries(JSON.parse(awaitedJson));

class FakeNode {}
class Text extends FakeNode { constructor(text) { super(); this.textContent = text; } }
class Element extends FakeNode {
  constructor(tag) { super(); this.tagName = tag; this.children = []; this.own = "";
                     this.className = ""; this.value = ""; this.listeners = {}; }
  append(...nodes) { this.children.push(...nodes); }
  prepend(...nodes) { this.children.unshift(...nodes); }
  replaceChildren(...nodes) { this.children = nodes; }
  get lastChild() { return { remove: () => this.children.pop() }; }
  set textContent(text) { this.own = text; this.children = []; }
  get textContent() { return [this.own, ...this.children.map((c) => c.textContent)].join(" "); }
  set innerHTML(html) { throw new Error("the page must not write markup"); }
  addEventListener(name, fn) { this.listeners[name] = fn; }
}
const elements = {};
const storage = {};
const context = {
  console, Headers, TextDecoderStream, JSON, Promise, Error, Object, Array, Set, Math, String,
  Date, setTimeout, setInterval, clearTimeout, Node: FakeNode,
  document: {
    createElement: (tag) => new Element(tag),
    createTextNode: (text) => new Text(text),
    getElementById: (id) => (elements[id] = elements[id] || new Element("div")),
    addEventListener: () => {},
  },
  location: { hash, pathname: "/", search: "" },
  history: { replaceState: () => { context.location.hash = ""; } },
  sessionStorage: { getItem: (k) => storage[k] ?? null, setItem: (k, v) => { storage[k] = v; } },
  fetch: (path, init) => fetch(base + path, init),
};
vm.createContext(context);
vm.runInContext(fs.readFileSync(scriptPath, "utf8"), context);
const text = (id) => (elements[id] ? elements[id].textContent : "").split(/\s+/).join(" ").trim();
let ready = false;
const poll = setInterval(() => {
  const login = elements.login ? elements.login.className : "";
  if (!ready && (text("live").includes("live") || login === "shown")) {
    ready = true;
    console.log("ready");
  }
  const shown = awaited.every(([id, wanted]) => text(id).includes(wanted));
  if (ready && text("self") && (shown || login === "shown")) {
    clearInterval(poll);
    const out = {};
    for (const id of Object.keys(elements)) out[id] = text(id);
    Object.assign(out, { form: login, hash: context.location.hash,
                         token: storage["sphaera-token"] ?? null });
    console.log(JSON.stringify(out));
    process.exit(0);
  }
}, 20);
setTimeout(() => {
  const shown = Object.fromEntries(Object.keys(elements).map((id) => [id, text(id)]));
  console.log("timeout", JSON.stringify(shown));
  process.exit(1);
}, 10000);
"""

EVIL = "<img src=x onerror=alert(1)>"
#: What the page shows once it has followed the changes made while it is open.
AWAITED = {"log": f"{EVIL}: absent → exists", "entities": f"{EVIL} evil exists"}


async def run_page(
    tmp_path: Path, node: Node, hash_: str, awaited: dict[str, str]
) -> dict[str, Any]:
    """Open the page on ``node``; once it is live, change something; return what it shows."""
    script = re.search(r"<script>(.*?)</script>", load_status_page().html.decode(), re.DOTALL)
    assert script is not None
    (tmp_path / "page.js").write_text(script.group(1))
    (tmp_path / "harness.js").write_text(HARNESS)
    process = await asyncio.create_subprocess_exec(
        "node",
        str(tmp_path / "harness.js"),
        node.url,
        hash_,
        str(tmp_path / "page.js"),
        json.dumps(awaited),
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    async with asyncio.timeout(15):
        assert (await process.stdout.readline()).strip() == b"ready"
        node.replica.observe("db", ok=True)
        node.replica.declare(EVIL, kind="evil")
        output = await process.stdout.read()
        assert await process.wait() == 0, output
    result: dict[str, Any] = json.loads(output)
    return result


def declare(node: Node) -> None:
    node.replica.declare("db", kind="pg", attrs={"port": 5432})
    node.replica.declare(
        "api", requires={"all": [{"exists": "db"}, {"observed": "db", "within": 10}]}
    )


async def test_the_page_renders_and_follows_events(tmp_path: Path) -> None:
    async with Node(NodeConfig(replica_id="a", port=0, gossip_interval=3600)) as node:
        declare(node)
        shown = await run_page(tmp_path, node, "", AWAITED)
    assert shown["self"] == "a"
    # the replica, its status, URL, no clock offset (itself) and when it was last seen
    assert re.fullmatch(rf"a exists {re.escape(node.url)} \d+ s ago", shown["replicas"])
    # the observations with their ages: db (by the test) and replica:a (by the node)
    assert re.match(r"db a ok \d+ s old \u2013 replica:a a ok \d+ s old ", shown["observations"])
    assert "api: absent → exists" in shown["log"]
    for entity in ("db", "api", "replica:a", EVIL):
        assert entity in shown["entities"]
    # The graph row of api names db as an exists dependency and an observed subject.
    assert "api exists db db" in shown["graph"]
    assert "4 entities · 4 exist" in shown["counts"]


async def test_the_page_takes_the_token_from_the_fragment(tmp_path: Path) -> None:
    config = NodeConfig(replica_id="a", port=0, gossip_interval=3600, token="t0k")
    async with Node(config) as node:
        declare(node)
        shown = await run_page(tmp_path, node, "#token=t0k", AWAITED)
    assert shown["token"] == "t0k"
    assert shown["hash"] == ""  # removed from the address bar
    assert shown["form"] == ""
    assert "api: absent → exists" in shown["log"]


async def test_the_page_asks_for_a_token_after_a_401(tmp_path: Path) -> None:
    config = NodeConfig(replica_id="a", port=0, gossip_interval=3600, token="t0k")
    async with Node(config) as node:
        shown = await run_page(tmp_path, node, "", {"log": "never"})
    assert shown["form"] == "shown"
    assert shown["live"] == "token needed"
    assert shown["self"] == "a"  # /healthz needs no token


async def test_the_page_shows_a_banner_while_the_clock_is_the_outlier(tmp_path: Path) -> None:
    async with Node(NodeConfig(replica_id="a", port=0, gossip_interval=3600)) as node:
        now = node.clock()
        # one peer measured 30 s behind this node: a majority of one
        node.clock_watch.measured("b", peer_time=now - 30.0, sent=now, received=now)
        node.replica.declare("replica:b", kind="replica", attrs={"url": "http://127.0.0.1:9"})
        shown = await run_page(tmp_path, node, "", {**AWAITED, "banner": "Clock skew"})
    assert "30.000s ahead of the median of its live peers" in shown["banner"]
    assert "records no observations" in shown["banner"]
    assert "b exists http://127.0.0.1:9 -30.000 s" in shown["replicas"]


async def test_ids_that_name_object_properties_are_plain_ids(tmp_path: Path) -> None:
    async with Node(NodeConfig(replica_id="a", port=0, gossip_interval=3600)) as node:
        declare(node)
        node.replica.declare("__proto__", kind="odd")
        node.replica.declare("constructor", requires={"exists": "__proto__"})
        node.replica.declare("toString", requires={"observed": "constructor", "within": 5})
        awaited = {**AWAITED, "graph": "__proto__ exists constructor"}
        shown = await run_page(tmp_path, node, "", awaited)
    assert "7 entities · 6 exist · 1 absent" in shown["counts"]
    assert "constructor exists __proto__" in shown["graph"]
    assert "toString absent constructor" in shown["graph"]


async def test_a_long_list_draws_its_first_rows_and_says_how_many_more(tmp_path: Path) -> None:
    async with Node(NodeConfig(replica_id="a", port=0, gossip_interval=3600)) as node:
        declare(node)
        for number in range(520):
            node.replica.declare(f"bulk/{number:03d}", kind="bulk")
        # 524 entities once the page has declared its own: drawn are the first 500 by id
        # ("<img ...", api, bulk/000 to bulk/497)
        awaited = {**AWAITED, "entities": "and 24 more: narrow the filter"}
        shown = await run_page(tmp_path, node, "", awaited)
    assert "524 entities" in shown["counts"]
    assert shown["shown"] == "the first 500 shown"
    assert "bulk/497" in shown["entities"] and "bulk/498" not in shown["entities"]
    assert shown["graph"].endswith("and 24 more: narrow the filter")
