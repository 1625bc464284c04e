/* sgtool view: the overview, gallery and image pages of a static site written by `sgtool view`.
 * Data arrive as scripts (data/meta.js, data/index.js, data/shards/NNNN.js) because browsers refuse
 * fetch() on file://. Text from the data is only ever set with textContent, never parsed as HTML. */
"use strict";
(function () {
  const META = window.SGVIEW_META;
  const INDEX = window.SGVIEW_INDEX;
  const PAGE_SIZE = 60;
  const RUN_COLOURS = ["#4575b4", "#f46d43", "#66bd63", "#9e0142", "#fdae61", "#5e4fa2", "#1b7837", "#c51b7d"];
  const MARKS = {hit: "\u25CF", fp: "\u2715", miss: "\u25C7", gt: "\u2192"};  // shapes beside the colours
  const SVG = "http://www.w3.org/2000/svg";

  // ------------------------------------------------------------ small helpers
  function h(tag, props, children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (key === "text") node.textContent = value;
      else if (key === "class") node.className = value;
      else if (key.startsWith("data-")) node.setAttribute(key, value);
      else node[key] = value;
    }
    for (const child of children || []) node.append(child);
    return node;
  }
  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    return node;
  }
  const percent = (v) => (v === null || v === undefined ? "n/a" : (100 * v).toFixed(2));
  const percentSign = (v) => (v === null || v === undefined ? "n/a" : percent(v) + "%");
  const predicateName = (p) => META.predicates[p - 1] || "?";
  const objectName = (l) => META.objects[l - 1] || "?";
  const runColour = (r) => RUN_COLOURS[r % RUN_COLOURS.length];
  const main = document.getElementById("main");

  function setWhere(text) {
    document.getElementById("where").textContent = text;
    document.title = "sgtool view: " + text;
  }

  // ------------------------------------------------------------ state (kept in the address's #hash)
  const DEFAULTS = {sort: "id", dir: "asc", pred: "0", status: "any", run: "0", page: "0", i: ""};
  function readState() {
    const state = Object.assign({}, DEFAULTS);
    for (const part of location.hash.replace(/^#/, "").split("&")) {
      const [key, value] = part.split("=");
      if (key in state && value !== undefined) state[key] = decodeURIComponent(value);
    }
    return state;
  }
  function hashOf(state) {
    return "#" + Object.keys(DEFAULTS).filter((k) => state[k] !== "" && state[k] !== DEFAULTS[k])
      .map((k) => k + "=" + encodeURIComponent(state[k])).join("&");
  }

  // ------------------------------------------------------------ gallery order (shared with the image page)
  function keeps(state, i) {
    const pred = Number(state.pred);
    if (!pred && state.status === "any") return true;
    const flags = INDEX.runs[Number(state.run)].relHit;
    for (let j = INDEX.relOffsets[i]; j < INDEX.relOffsets[i + 1]; j++) {
      if (pred && INDEX.relPred[j] !== pred) continue;
      if (state.status === "any" || (state.status === "hit") === (flags[j] === "1")) return true;
    }
    return false;
  }
  function ordered(state) {
    const list = [];
    for (let i = 0; i < INDEX.count; i++) if (keeps(state, i)) list.push(i);
    const sign = state.dir === "desc" ? -1 : 1;
    if (state.sort.startsWith("recall-")) {
      const recall = INDEX.runs[Number(state.sort.slice(7))].recall;
      list.sort((a, b) => {
        const ra = recall[a], rb = recall[b];
        if (ra === null || rb === null) return (ra === null) - (rb === null) || a - b;  // no GT: last
        return sign * (ra - rb) || a - b;
      });
    } else if (sign < 0) {
      list.reverse();
    }
    return list;
  }
  const thumbOf = (i) => "thumbs/" + String(Math.floor(i / 1000)).padStart(3, "0") + "/" + i +
    (INDEX.pictures[i] === "1" ? ".jpg" : ".svg");

  // ------------------------------------------------------------ overview
  function metricsTable() {
    const names = [];
    for (const run of META.runs) for (const name of Object.keys(run.metrics)) if (!names.includes(name)) names.push(name);
    const head = h("tr", {}, [h("th", {text: "metric (%)"}), ...META.runs.map((run) => h("th", {text: run.name}))]);
    const rows = names.map((name) => h("tr", {}, [h("th", {text: name}), ...META.runs.map((run) => {
      const value = name in run.metrics ? run.metrics[name] : null;
      return h("td", {text: percent(value), "data-run": run.name, "data-metric": name, "data-value": JSON.stringify(value)});
    })]));
    return h("table", {id: "metrics", class: "numbers"}, [h("thead", {}, [head]), h("tbody", {}, rows)]);
  }
  function recallBars() {
    const legend = h("div", {class: "legend"}, META.runs.map((run, r) =>
      h("span", {}, [h("i", {class: "swatch", style: "background:" + runColour(r)}), run.name])));
    const rows = META.predicates.map((name) => h("div", {class: "bar-row"}, [h("span", {class: "bar-name", text: name}),
      h("div", {class: "bars"}, META.runs.map((run, r) => {
        const value = run.perPredicate[name];
        const width = value === null || value === undefined ? 0 : 100 * value;
        return h("div", {class: "bar-line"}, [h("div", {class: "bar", style: `width:${width}%;background:${runColour(r)}`,
          "data-run": run.name, "data-predicate": name}), h("span", {class: "bar-value", text: percent(value)})]);
      }))]));
    return h("section", {id: "per-predicate"}, [h("h2", {text: `Per-predicate recall R@${META.k}`}), legend, ...rows]);
  }
  function confusionTable(run) {
    const P = META.predicates.length;
    const head = h("tr", {}, [h("th", {text: "GT \u2193 / predicted \u2192"}), h("th", {text: "no pair"}),
      ...META.predicates.map((p) => h("th", {class: "vertical", text: p}))]);
    const rows = [];
    for (let g = 1; g <= P; g++) {
      const counts = run.confusion[g];
      const total = counts.reduce((a, b) => a + b, 0) || 1;
      rows.push(h("tr", {}, [h("th", {text: predicateName(g)}), ...counts.map((c, p) => h("td", {
        text: c ? String(c) : "", class: p === g ? "diagonal" : "",
        style: `background:rgba(69,117,180,${(c / total).toFixed(3)})`}))]));
    }
    return h("div", {class: "confusion", "data-run": run.name}, [h("h3", {text: `${run.name} (${run.task})`}),
      h("table", {class: "matrix"}, [h("thead", {}, [head]), h("tbody", {}, rows)])]);
  }
  function overview() {
    setWhere(`${META.dataset} / ${META.split}: ${META.images} images, ${META.runs.length} runs, top ${META.k}`);
    main.replaceChildren(h("h1", {text: "Overview"}),
      h("p", {text: `Each run's numbers are its eval report's (sgtool eval, the same evaluator), in %. ` +
        `Dataset ${META.dataset}, split ${META.split}.`}),
      metricsTable(), recallBars(),
      h("section", {id: "confusion"}, [h("h2", {text: "Predicate confusion (rows: GT predicate; columns: the " +
        "predicate ranked first on the matching pair of boxes, or no pair)"}), ...META.runs.map(confusionTable)]),
      h("p", {class: "credit", text: `Graphs drawn with ${META.library.name} ${META.library.version} (${META.library.licence}).`}));
  }

  // ------------------------------------------------------------ gallery
  function select(id, options, value, label) {
    const node = h("select", {id}, options.map(([v, text]) => h("option", {value: v, text})));
    node.value = value;
    return h("label", {}, [label + " ", node]);
  }
  function controls(state) {
    const runs = META.runs.map((run, r) => [String(r), run.name]);
    return h("div", {class: "controls"}, [
      select("sort", [["id", "split order"], ...META.runs.map((run, r) => ["recall-" + r, `recall of ${run.name}`])], state.sort, "sort by"),
      select("dir", [["asc", "ascending"], ["desc", "descending"]], state.dir, ""),
      select("pred", [["0", "any predicate"], ...META.predicates.map((p, k) => [String(k + 1), p])], state.pred, "filter"),
      select("status", [["any", "hit or miss"], ["hit", "hit"], ["miss", "miss"]], state.status, ""),
      select("run", runs, state.run, "by run")]);
  }
  function card(i, state) {
    const lines = META.runs.map((run, r) => {
      const data = INDEX.runs[r];
      return h("div", {class: "card-run", text: `${run.name}: ${percentSign(data.recall[i])} (${data.hits[i]}/${data.hits[i] + data.misses[i]})`});
    });
    const target = Object.assign({}, state, {i: String(i)});
    return h("a", {class: "card", href: "image.html" + hashOf(target), "data-i": String(i)}, [
      h("img", {src: thumbOf(i), alt: `image ${INDEX.ids[i]}`, loading: "lazy"}),
      h("div", {class: "card-id", text: `image ${INDEX.ids[i]}`}), ...lines]);
  }
  function gallery() {
    const state = readState();
    const list = ordered(state);
    const pages = Math.max(1, Math.ceil(list.length / PAGE_SIZE));
    const page = Math.min(Math.max(Number(state.page) || 0, 0), pages - 1);
    setWhere(`${META.dataset} / ${META.split}: gallery`);
    const go = (delta) => () => { location.hash = hashOf(Object.assign(state, {page: String(page + delta)})); };
    const pager = h("div", {class: "pager"}, [h("button", {id: "prev-page", text: "\u2190 previous", disabled: page === 0, onclick: go(-1)}),
      h("span", {id: "page", text: `page ${page + 1} of ${pages}`}),
      h("button", {id: "next-page", text: "next \u2192", disabled: page >= pages - 1, onclick: go(1)}),
      h("span", {id: "count", "data-n": String(list.length), text: `${list.length} of ${INDEX.count} images`})]);
    const cards = list.slice(page * PAGE_SIZE, (page + 1) * PAGE_SIZE).map((i) => card(i, state));
    main.replaceChildren(h("h1", {text: "Gallery"}), controls(state), pager, h("div", {id: "cards"}, cards));
    for (const id of ["sort", "dir", "pred", "status", "run"]) {
      document.getElementById(id).addEventListener("change", (event) => {
        location.hash = hashOf(Object.assign(readState(), {[id]: event.target.value, page: "0"}));
      });
    }
  }

  // ------------------------------------------------------------ image page
  const shards = {}, resolvers = {};
  window.sgviewShard = (n, images) => { if (resolvers[n]) resolvers[n](images); };
  function loadShard(n) {
    if (!shards[n]) {
      shards[n] = new Promise((resolve, reject) => {
        resolvers[n] = resolve;
        const tag = document.createElement("script");
        tag.src = "data/shards/" + String(n).padStart(4, "0") + ".js";
        tag.onerror = () => reject(new Error("missing shard " + n));
        document.head.append(tag);
      });
    }
    return shards[n];
  }
  function picture(image) {
    const canvas = svg("svg", {viewBox: `0 0 ${image.w} ${image.h}`, class: "picture", id: "picture"});
    if (image.image) canvas.append(svg("image", {href: image.image, x: 0, y: 0, width: image.w, height: image.h}));
    else canvas.append(svg("rect", {x: 0, y: 0, width: image.w, height: image.h, class: "blank"}));
    const size = Math.max(image.w, image.h) / 40;
    image.gt.boxes.forEach((b, n) => {
      canvas.append(svg("rect", {x: b[0], y: b[1], width: b[2] - b[0], height: b[3] - b[1], class: "gt-box"}));
      const label = svg("text", {x: b[0] + size / 4, y: b[1] + size, "font-size": size, class: "gt-label"});
      label.textContent = `${objectName(image.gt.labels[n])} ${n}`;
      canvas.append(label);
    });
    canvas.append(svg("g", {id: "highlight"}));
    return canvas;
  }
  function highlight(boxes) {
    const group = document.getElementById("highlight");
    group.replaceChildren(...boxes.map(([b, role]) => svg("rect", {x: b[0], y: b[1], width: b[2] - b[0],
      height: b[3] - b[1], class: "hl " + role})));
  }
  // A graph's relations: {s, o, p, kind: gt|hit|fp|miss, sBoxes, oBoxes (the boxes they index), label}.
  function relationItem(rel) {
    const text = `${MARKS[rel.kind]} ${rel.sName} \u2014${predicateName(rel.p)}\u2192 ${rel.oName}` +
      (rel.score !== undefined ? ` (${rel.score.toFixed(3)})` : "");
    const item = h("li", {class: "rel " + rel.kind, text, "data-s": String(rel.s), "data-o": String(rel.o)});
    item.addEventListener("mouseenter", () => highlight([[rel.sBox, "subj"], [rel.oBox, "obj"]]));
    item.addEventListener("mouseleave", () => highlight([]));
    return item;
  }
  function drawGraph(container, relations) {
    if (!window.cytoscape || !relations.length) return;
    const nodes = new Map();
    relations.forEach((rel) => { nodes.set(rel.sNode, rel.sName); nodes.set(rel.oNode, rel.oName); });
    const elements = [...[...nodes].map(([id, label]) => ({data: {id, label}})),
      ...relations.map((rel, k) => ({data: {id: "e" + k, source: rel.sNode, target: rel.oNode, label: predicateName(rel.p), k}, classes: rel.kind}))];
    const cy = window.cytoscape({container, elements, layout: {name: "cose", animate: false, padding: 12},
      style: GRAPH_STYLE, userZoomingEnabled: false, boxSelectionEnabled: false});
    cy.on("mouseover", "edge", (event) => { const rel = relations[event.target.data("k")]; highlight([[rel.sBox, "subj"], [rel.oBox, "obj"]]); });
    cy.on("mouseout", "edge", () => highlight([]));
  }
  const GRAPH_STYLE = [
    {selector: "node", style: {"label": "data(label)", "shape": "round-rectangle", "width": 64, "height": 20,
      "font-size": 9, "text-valign": "center", "background-color": "#e8ecf4", "border-width": 1, "border-color": "#8894aa"}},
    {selector: "edge", style: {"curve-style": "bezier", "label": "data(label)", "font-size": 8, "width": 2,
      "text-background-color": "#fff", "text-background-opacity": 0.8, "target-arrow-shape": "triangle",
      "line-color": "#666", "target-arrow-color": "#666"}},
    {selector: "edge.hit", style: {"line-color": "#1a9850", "target-arrow-color": "#1a9850", "line-style": "solid", "target-arrow-shape": "triangle"}},
    {selector: "edge.fp", style: {"line-color": "#d73027", "target-arrow-color": "#d73027", "line-style": "dashed", "target-arrow-shape": "tee"}},
    {selector: "edge.miss", style: {"line-color": "#7b3294", "target-arrow-color": "#7b3294", "line-style": "dotted", "target-arrow-shape": "diamond"}},
  ];
  function gtRelations(image) {
    const g = image.gt;
    return g.rels.map(([s, o, p], j) => ({s, o, p, j, kind: "gt", sNode: "g" + s, oNode: "g" + o, sBox: g.boxes[s], oBox: g.boxes[o],
      sName: `${objectName(g.labels[s])} ${s}`, oName: `${objectName(g.labels[o])} ${o}`}));
  }
  function runRelations(image, r) {
    const run = image.runs[r], own = run.boxes || image.gt.boxes, flags = INDEX.runs[r].relHit;
    const prefix = run.boxes ? "p" : "g";  // predictions on the GT boxes share the GT's nodes
    const top = run.top.map(([s, o, p, score, hit]) => ({s, o, p, score, kind: hit ? "hit" : "fp", sNode: prefix + s, oNode: prefix + o,
      sBox: own[s], oBox: own[o], sName: `${objectName(run.labels[s])} ${s}`, oName: `${objectName(run.labels[o])} ${o}`}));
    const first = INDEX.relOffsets[image.i];
    const gtName = (name) => (run.boxes ? "GT " + name : name);  // detected boxes: GT nodes named apart
    const missed = gtRelations(image).filter((rel) => flags[first + rel.j] === "0")
      .map((rel) => Object.assign(rel, {kind: "miss", sName: gtName(rel.sName), oName: gtName(rel.oName)}));
    return top.concat(missed);
  }
  function graphPanel(title, relations, attrs, counts) {
    const graph = h("div", {class: "graph"});
    const panel = h("section", Object.assign({class: "panel"}, attrs), [h("h3", {text: title}), counts || "", graph,
      h("ul", {class: "rels"}, relations.map(relationItem))]);
    return [panel, () => drawGraph(graph, relations)];
  }
  function runPanel(image, r) {
    const data = INDEX.runs[r], run = META.runs[r], i = image.i;
    const counts = h("p", {class: "counts"}, [h("span", {class: "hit", text: `${MARKS.hit} hits ${data.hits[i]}`}),
      h("span", {class: "fp", text: `${MARKS.fp} false positives ${data.fps[i]}`}),
      h("span", {class: "miss", text: `${MARKS.miss} misses ${data.misses[i]}`}),
      h("span", {text: `recall ${percentSign(data.recall[i])}`})]);
    return graphPanel(`${run.name} (${run.task}): top ${META.k}`, runRelations(image, r),
      {"data-run": run.name, "data-hits": String(data.hits[i]), "data-fps": String(data.fps[i]), "data-misses": String(data.misses[i])}, counts);
  }
  function neighbours(state, i) {
    const list = ordered(state);
    let at = list.indexOf(i);
    const prev = at > 0 ? list[at - 1] : (at < 0 ? list.filter((j) => j < i).pop() : undefined);
    const next = at >= 0 ? list[at + 1] : list.find((j) => j > i);
    return {prev, next, at, total: list.length};
  }
  async function imagePage() {
    const state = readState();
    const i = Math.min(Math.max(Number(state.i) || 0, 0), INDEX.count - 1);
    const image = (await loadShard(Math.floor(i / INDEX.shardSize)))[i - Math.floor(i / INDEX.shardSize) * INDEX.shardSize];
    const near = neighbours(state, i);
    const link = (j, text, id) => j === undefined ? h("span", {id, class: "disabled", text}) :
      h("a", {id, href: "image.html" + hashOf(Object.assign({}, state, {i: String(j)})), text});
    setWhere(`${META.dataset} / ${META.split}: image ${image.id}`);
    const panels = [graphPanel(`Ground truth (${image.gt.rels.length} relations)`, gtRelations(image), {"data-run": ""}),
      ...META.runs.map((_, r) => runPanel(image, r))];
    main.replaceChildren(h("div", {class: "image-nav"}, [link(near.prev, "\u2190 previous", "prev"),
      h("a", {href: "gallery.html" + hashOf(Object.assign({}, state, {i: ""})), text: "gallery", id: "to-gallery"}),
      link(near.next, "next \u2192", "next"),
      h("span", {text: near.at >= 0 ? `${near.at + 1} of ${near.total} in this order (keys \u2190 \u2192)` : "not in this filter"})]),
    h("h1", {id: "image-title", "data-i": String(i), text: `Image ${image.id}` + (image.image ? "" : " (no pixels: boxes on a blank canvas)")}),
    h("div", {class: "legend"}, [h("span", {class: "hit", text: MARKS.hit + " hit (green, solid)"}),
      h("span", {class: "fp", text: MARKS.fp + " false positive (red, dashed)"}), h("span", {class: "miss", text: MARKS.miss + " missed GT (purple, dotted)"})]),
    h("div", {class: "image-layout"}, [h("div", {class: "figure"}, [picture(image)]), h("div", {class: "panels"}, panels.map((p) => p[0]))]));
    panels.forEach((p) => p[1]());
    document.onkeydown = (event) => {
      const target = {ArrowLeft: near.prev, k: near.prev, ArrowRight: near.next, j: near.next}[event.key];
      if (target !== undefined) location.hash = hashOf(Object.assign({}, state, {i: String(target)}));
      else if (event.key === "g") location.href = "gallery.html" + hashOf(Object.assign({}, state, {i: ""}));
    };
  }

  // ------------------------------------------------------------ start
  const page = document.body.dataset.page;
  document.getElementById("nav-" + (page === "image" ? "gallery" : page)).classList.add("here");
  const render = {overview, gallery, image: imagePage}[page];
  window.addEventListener("hashchange", () => render());
  render();
})();
