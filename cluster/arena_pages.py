"""The arena's two pages (vote, leaderboard) and their one script, served by cluster/arena_app.py.

Plain HTML + JavaScript, no framework, no external resource (the app's Content-Security-Policy is
`default-src 'self'`, so style and script are files, not inline): the page asks /api/match for K
images, the person clicks them in order (rank mode) or clicks the best one (best mode), and the
vote goes to /api/vote with a fresh random token per match, so a resubmission after a network
error counts once. Text is set with `textContent`, never `innerHTML`. Element ids are what
tests/cluster/test_arena_browser.py uses. Our own design [ours].
"""
from __future__ import annotations

ARENA_CSS = """
 body { font-family: sans-serif; margin: 1.5em; background: #fafafa; color: #222; }
 nav a { margin-right: 1em; }
 #images { display: flex; gap: 1em; flex-wrap: wrap; margin: 1em 0; }
 figure { margin: 0; text-align: center; cursor: pointer; border: 3px solid #ddd; padding: 4px;
          background: white; border-radius: 6px; }
 figure.chosen { border-color: #2a7; }
 figure img { width: 160px; height: 160px; image-rendering: pixelated; display: block; }
 figcaption { font-size: 1.4em; font-weight: bold; min-height: 1.4em; }
 button { font-size: 1em; padding: 0.4em 1em; margin-right: 0.5em; }
 table { border-collapse: collapse; background: white; }
 td, th { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: right; }
 td:nth-child(2), th:nth-child(2) { text-align: left; }
 #status { margin-top: 1em; min-height: 1.2em; }
"""
_STYLE = '<link rel="stylesheet" href="/arena.css">'

VOTE_HTML = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>evfarm K-Sort arena: vote</title>{_STYLE}</head>
<body data-page="vote">
<nav><a href="/">vote</a><a href="/leaderboard" id="to-leaderboard">leaderboard</a></nav>
<h1>Which image is best?</h1>
<p>Prompt <b id="prompt">…</b>. <span id="hint"></span></p>
<p>
 <label><input type="radio" name="mode" id="mode-rank" value="rank" checked> rank all (click in order,
 best first)</label>
 <label><input type="radio" name="mode" id="mode-best" value="best"> pick the best</label>
</p>
<div id="images"></div>
<button id="submit" disabled>submit</button><button id="reset">reset</button>
<div id="status"></div>
<script src="/arena.js"></script>
</body></html>
"""

LEADERBOARD_HTML = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>evfarm K-Sort arena: leaderboard</title>{_STYLE}</head>
<body data-page="leaderboard">
<nav><a href="/" id="to-vote">vote</a><a href="/leaderboard">leaderboard</a></nav>
<h1>Leaderboard</h1>
<p><span id="total-votes">0</span> votes. Score = μ − 3σ (K-Sort); Bradley–Terry fitted on the same
votes, 95 % bootstrap interval.</p>
<table id="board"><thead><tr><th>#</th><th>model</th><th>score</th><th>μ</th><th>σ</th><th>votes</th>
<th>Bradley–Terry</th><th>95 % CI</th></tr></thead><tbody></tbody></table>
<script src="/arena.js"></script>
</body></html>
"""

ARENA_JS = r"""
"use strict";
function randomId() {
  if (window.crypto && crypto.getRandomValues) {
    const b = new Uint8Array(16); crypto.getRandomValues(b);
    return Array.from(b, x => x.toString(16).padStart(2, "0")).join("");
  }
  return (Date.now().toString(16) + Math.random().toString(16).slice(2)).slice(0, 32);
}
function session() {
  let s = localStorage.getItem("arena-session");
  if (!s) { s = "web-" + randomId(); localStorage.setItem("arena-session", s); }
  return s;
}
let match = null, order = [], token = null;
function mode() { return document.getElementById("mode-best").checked ? "best" : "rank"; }
function render() {
  const figs = document.querySelectorAll("#images figure");
  figs.forEach((f, i) => {
    const place = order.indexOf(i);
    const cap = f.querySelector("figcaption");
    if (mode() === "best") { cap.textContent = place === 0 ? "best" : ""; }
    else { cap.textContent = place >= 0 ? String(place + 1) : ""; }
    f.classList.toggle("chosen", place >= 0);
  });
  const need = mode() === "best" ? 1 : match.k;
  document.getElementById("submit").disabled = order.length < need;
  document.getElementById("hint").textContent = mode() === "best" ? "Click the best image." :
    "Click the images from best to worst (" + order.length + "/" + match.k + ").";
}
function pick(i) {
  if (mode() === "best") { order = [i]; }
  else if (order.indexOf(i) < 0) { order.push(i); }
  render();
}
async function loadMatch() {
  const r = await fetch("/api/match");
  match = await r.json(); order = []; token = randomId();
  document.getElementById("prompt").textContent = match.prompt;
  const box = document.getElementById("images");
  box.replaceChildren();
  match.images.forEach((src, i) => {
    const f = document.createElement("figure");
    const img = document.createElement("img");
    img.src = src; img.alt = "candidate " + (i + 1); img.className = "candidate";
    const cap = document.createElement("figcaption");
    f.append(img, cap); f.addEventListener("click", () => pick(i)); box.append(f);
  });
  render();
  document.body.dataset.matches = String(Number(document.body.dataset.matches || 0) + 1);
}
async function submit() {
  const k = match.k, ranks = new Array(k);
  if (mode() === "best") { for (let i = 0; i < k; i++) ranks[i] = i === order[0] ? 0 : 1; }
  else { order.forEach((i, place) => { ranks[i] = place; }); }
  const body = {token: token, session: session(), prompt: match.prompt, models: match.models,
                ranks: ranks, mode: mode()};
  const r = await fetch("/api/vote", {method: "POST", headers: {"Content-Type": "application/json"},
                                      body: JSON.stringify(body)});
  const out = await r.json();
  const status = document.getElementById("status");
  if (!r.ok) { status.textContent = "not recorded: " + out.detail; return; }
  status.textContent = "vote #" + out.seq + " recorded (" + out.n_votes + " votes in all)";
  status.dataset.seq = out.seq;
  await loadMatch();
}
async function loadBoard() {
  const r = await fetch("/api/leaderboard");
  const board = await r.json();
  document.getElementById("total-votes").textContent = board.n_votes;
  const body = document.querySelector("#board tbody");
  body.replaceChildren();
  const f = (x, d) => x === null || x === undefined ? "–" : x.toFixed(d);
  for (const row of board.rows) {
    const tr = document.createElement("tr");
    tr.dataset.model = row.model;
    const ci = row.bt_lo === null ? "–" : "[" + f(row.bt_lo, 0) + ", " + f(row.bt_hi, 0) + "]";
    for (const v of [row.rank, row.model, f(row.score, 2), f(row.mu, 2), f(row.sigma, 2), row.votes,
                     f(row.bt, 0), ci]) {
      const td = document.createElement("td"); td.textContent = String(v); tr.append(td);
    }
    body.append(tr);
  }
}
window.addEventListener("DOMContentLoaded", () => {
  if (document.body.dataset.page === "vote") {
    document.getElementById("submit").addEventListener("click", submit);
    document.getElementById("reset").addEventListener("click", () => { order = []; render(); });
    document.querySelectorAll("input[name=mode]").forEach(x =>
      x.addEventListener("change", () => { order = []; render(); }));
    loadMatch();
  } else { loadBoard(); }
});
"""
