// The search page: calls /search (with each hit's top terms) and /explain; builds the DOM with
// textContent only, so no document text is ever parsed as HTML.
"use strict";

const TERMS = 8; // terms drawn per hit
const $ = (sel) => document.querySelector(sel);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "style") Object.assign(node.style, value); // CSSOM: allowed by the page's CSP

    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function fmt(x, digits) {
  if (x === null || x === undefined) return "—";
  const d = digits !== undefined ? digits : Math.abs(x) >= 100 ? 1 : Math.abs(x) >= 10 ? 2 : 3;
  return Number(x).toFixed(d);
}

async function getJSON(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" } });
  let data = null;
  try { data = await response.json(); } catch (_) { /* a non-JSON body: reported below */ }
  if (!response.ok) {
    throw new Error((data && data.detail) || `${response.status} ${response.statusText}`);
  }
  return data;
}

// text with <mark> around spans [start, end, terms, score], shaded by score relative to `top`
function marked(text, spans, top) {
  const out = [];
  let at = 0;
  for (const [start, end, terms, score] of spans || []) {
    if (start < at) continue;
    if (start > at) out.push(document.createTextNode(text.slice(at, start)));
    const ratio = top > 0 ? score / top : 0;
    out.push(el("mark", { class: ratio >= 0.4 ? "w3" : ratio >= 0.15 ? "w2" : "w1",
                          "data-terms": " " + terms.join(" ") + " ",
                          title: `matches ${terms.join(", ")}: +${fmt(score)}`, text: text.slice(start, end) }));
    at = end;
  }
  if (at < text.length) out.push(document.createTextNode(text.slice(at)));
  return out;
}

function showError(message) {
  const box = $("#error");
  box.textContent = message || "";
  box.hidden = !message;
}

// asked: the mode in the page's address, else the served one (the server's default, /status)
async function loadStatus(asked) {
  try {
    const s = await getJSON("/status");
    const name = s.index.split("/").filter(Boolean).pop();
    $("#status").replaceChildren(
      el("b", { text: name }), ` · ${s.documents_loaded.toLocaleString()} documents · encoder `,
      el("b", { text: String(s.encoder).split("/").filter(Boolean).slice(-2).join("/") }), ` · α = ${s.alpha}`,
      " · serving ", el("b", { text: s.mode }));
    for (const input of document.querySelectorAll("input[name=mode]")) {
      input.disabled = !s.modes.includes(input.value);
      if (input.value === "hybrid+bm25") input.closest("label").hidden = input.disabled;  // only where served
    }
    const pick = document.querySelector(`input[name=mode][value="${CSS.escape(asked || s.mode)}"]`);
    if (pick && !pick.disabled) pick.checked = true;
  } catch (e) {
    $("#status").textContent = "status unavailable: " + e.message;
  }
}

function termBars(hit, maxScore) {
  const bars = el("ol", { class: "bars" });
  for (const t of hit.terms || []) {
    const kind = t.in_text === false ? "expansion" : "text";
    const width = maxScore > 0 ? Math.max(1, (100 * t.score) / maxScore) : 0;
    const row = el("li", {
      class: `bar ${kind}`, "data-term": t.term,
      title: `${t.term}: q_t ${t.query_weight} × d_t ${t.doc_weight} = ${t.impact}; × α = ${fmt(t.score, 4)}` +
             (kind === "expansion" ? " (expansion: not in the text)" : ""),
    },
      el("span", { class: "term" }, t.term, kind === "expansion" ? el("i", { class: "tag", text: "exp" }) : null),
      el("span", { class: "track" }, el("span", { class: `fill ${kind}`, style: { width: `${width.toFixed(1)}%` } })),
      el("span", { class: "val", text: "+" + fmt(t.score) }));
    bars.append(row);
  }
  // hovering a term lights up the words it matched
  bars.addEventListener("mouseover", (ev) => hot(ev, true));
  bars.addEventListener("mouseout", (ev) => hot(ev, false));
  return bars;
}

function hot(ev, on) {
  const row = ev.target.closest(".bar");
  if (!row) return;
  const card = row.closest(".hit");
  for (const m of card.querySelectorAll("mark")) {
    if (m.dataset.terms.includes(" " + row.dataset.term + " ")) m.classList.toggle("hot", on);
  }
}

function scoresBlock(hit, mode) {
  const dl = el("dl", { class: "scores" },
    el("div", { class: "total" }, `${mode} score `, el("b", { text: fmt(hit.score, 4) })));
  if (mode === "hybrid" && hit.dense_score > 0 && hit.sparse_score > 0) {
    const share = (100 * hit.dense_score) / (hit.dense_score + hit.sparse_score);
    dl.append(el("div", { class: "split", title: `dense ${share.toFixed(0)}% · sparse ${(100 - share).toFixed(0)}%` },
      el("span", { class: "d", style: { width: `${share.toFixed(1)}%` } }),
      el("span", { class: "s", style: { width: `${(100 - share).toFixed(1)}%` } })));
  }
  dl.append(el("dt", { text: "dense h_q·h_d" }), el("dd", { text: fmt(hit.dense_score, 4) }),
            el("dt", { text: "sparse Σq·d × α" }),
            el("dd", { text: hit.sparse_score === null ? "—" : `${fmt(hit.sparse_score, 4)}  (${hit.impact_score} × α)` }));
  return dl;
}

async function showAllTerms(button, card, query, docid) {
  const open = card.querySelector(".all-terms");
  if (open) { open.remove(); button.textContent = "all terms"; return; }
  button.disabled = true;
  try {
    const e = await getJSON(`/explain?${new URLSearchParams({ q: query, docid })}`);
    const rows = e.terms.map((t) => el("tr", {},
      el("td", { class: "term" }, t.term, t.in_text === false ? el("i", { class: "tag", text: "exp" }) : null),
      el("td", { text: t.query_weight }), el("td", { text: t.doc_weight }), el("td", { text: t.impact }),
      el("td", { text: fmt(t.score, 4) })));
    card.append(el("div", { class: "all-terms" }, el("table", {},
      el("thead", {}, el("tr", {}, ["term", "q_t", "d_t", "q_t·d_t", "× α"].map((h) => el("th", { text: h })))),
      el("tbody", {}, rows),
      el("tfoot", {}, el("tr", {}, el("td", { text: `Σ over ${e.terms.length} terms` }), el("td"), el("td"),
        el("td", { text: e.impact_score }), el("td", { text: fmt(e.sparse_score, 4) }))))));
    button.textContent = "hide terms";
  } catch (err) {
    showError(err.message);
  } finally {
    button.disabled = false;
  }
}

function hitCard(hit, data, maxScore) {
  const query = data.query.query_txt;
  const card = el("li", { class: "hit", "data-docid": hit.docid });
  const top = Math.max(0, ...(hit.terms || []).map((t) => t.score)); // the hit's largest term
  const title = hit.title || (hit.in_corpus ? "(untitled)" : "(text not in the loaded corpus)");
  card.append(el("div", { class: "hit-main" },
    el("div", { class: "hit-head" }, el("span", { class: "rank", text: hit.rank }),
      el("h3", { class: "title" }, marked(title, hit.title ? hit.title_highlights : [], top))),
    el("div", { class: "docid mono", text: `docid ${hit.docid}` }),
    el("p", { class: "snippet" }, marked(hit.snippet, hit.highlights, top))));
  const side = el("div", { class: "hit-side" }, scoresBlock(hit, data.mode));
  if (hit.terms && hit.terms.length) {
    const more = el("button", { class: "linkish", type: "button", text: "all terms" });
    more.addEventListener("click", () => showAllTerms(more, card, query, hit.docid));
    side.append(el("div", { class: "why" },
      el("h4", { text: "Why it matched: top terms" }), termBars(hit, maxScore),
      el("div", { class: "why-foot" },
        `${hit.matched_terms} matched terms · ${hit.expansion_terms} expansions`, more)));
  } else if (hit.terms) {
    side.append(el("div", { class: "why-foot", text: "no query term in this document: matched on the dense side only" }));
  }
  card.append(side);
  return card;
}

async function search(ev) {
  if (ev) ev.preventDefault();
  const q = $("#q").value.trim();
  if (!q) return;
  const mode = document.querySelector("input[name=mode]:checked").value;
  const k = $("#k").value;
  history.replaceState(null, "", `?${new URLSearchParams({ q, mode, k })}`);
  $("#go").disabled = true;
  $("#hits").classList.add("busy");
  showError("");
  try {
    const data = await getJSON(`/search?${new URLSearchParams({ q, mode, k, terms: TERMS })}`);
    const maxScore = Math.max(0, ...data.hits.flatMap((h) => (h.terms || []).map((t) => t.score)));
    $("#summary").replaceChildren(`${data.hits.length} hits for `, el("b", { text: `“${q}”` }),
      ` · ${data.mode} · ${data.took_ms} ms`);
    $("#hits").replaceChildren(...data.hits.map((h) => hitCard(h, data, maxScore)));
    $("#intro").hidden = data.hits.length > 0;
  } catch (e) {
    showError(e.message);
  } finally {
    $("#go").disabled = false;
    $("#hits").classList.remove("busy");
  }
}

$("#search").addEventListener("submit", search);
const start = new URLSearchParams(location.search);
loadStatus(start.get("mode")).then(() => {
  if (start.get("q")) {
    $("#q").value = start.get("q");
    if (start.get("k")) $("#k").value = start.get("k");
    search();
  }
});
