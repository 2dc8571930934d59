// Attention: pick a layer and a head (or a KV head's group, or all heads); hover or click a
// token to shade the keys it reads (blue background) and the queries that read it (orange
// underline). A canvas shows the whole pattern; rows are stored sparse, as uint8 levels.
(function () {
  "use strict";
  const IV = window.InterpViews;
  const KEYS = "37,99,235";
  const READERS = "234,88,12";

  IV.renderers.attention = async function (root, data) {
    const T = data.tokens.length, H = data.n_heads;
    const [counts, keys, levels] = await Promise.all(
      [data.counts, data.keys, data.weights].map(IV.unpack));
    const offsets = new Uint32Array(counts.length + 1);  // [layer head query] -> first entry
    for (let i = 0; i < counts.length; i++) offsets[i + 1] = offsets[i] + counts[i];
    const scale = 1 / data.levels;
    const state = { layer: 0, heads: [0], label: "head 0", query: null, pinned: false };

    // Mean over the selected heads of one query's row: [key] weights.
    function row(query) {
      const out = new Float32Array(T);
      state.heads.forEach(function (h) {
        const r = (state.layer * H + h) * T + query;
        for (let i = offsets[r]; i < offsets[r + 1]; i++) out[keys[i]] += levels[i] * scale;
      });
      for (let k = 0; k < T; k++) out[k] /= state.heads.length;
      return out;
    }

    // The same mean, read down one key's column: [query] weights.
    function column(key) {
      const out = new Float32Array(T);
      state.heads.forEach(function (h) {
        for (let q = key; q < T; q++) {
          const r = (state.layer * H + h) * T + q;
          for (let i = offsets[r]; i < offsets[r + 1]; i++) {
            if (keys[i] === key) out[q] += levels[i] * scale;
          }
        }
      });
      for (let q = 0; q < T; q++) out[q] /= state.heads.length;
      return out;
    }

    const controls = IV.el("div", "iv-controls");
    root.appendChild(controls);
    const layers = [];
    for (let l = 0; l < data.n_layers; l++) layers.push([l, "layer " + l]);
    IV.select(controls, "layer", layers, function (v) { state.layer = +v; redraw(); });

    // Head buttons grouped by the KV head they share (GQA): the group's name picks its mean.
    const headBar = IV.el("div", "iv-heads");
    controls.appendChild(headBar);
    const buttons = [];
    function button(parent, text, heads, label) {
      const b = IV.el("button", "iv-head", text);
      b.type = "button";
      b.addEventListener("click", function () {
        state.heads = heads; state.label = label;
        buttons.forEach(function (o) { o.classList.toggle("iv-on", o === b); });
        redraw();
      });
      parent.appendChild(b);
      buttons.push(b);
      return b;
    }
    const all = [];
    for (let h = 0; h < H; h++) all.push(h);
    button(headBar, "all heads", all, "all heads (mean)").dataset.heads = "all";
    const groups = Math.max.apply(null, data.kv_heads) + 1;
    for (let g = 0; g < groups; g++) {
      const members = all.filter(function (h) { return data.kv_heads[h] === g; });
      const box = IV.el("span", "iv-group");
      headBar.appendChild(box);
      button(box, "KV " + g, members,
             "KV head " + g + " (mean of query heads " + members.join(", ") + ")").dataset.heads =
        "kv" + g;
      members.forEach(function (h) {
        button(box, String(h), [h], "head " + h + " (KV head " + g + ")").dataset.heads = String(h);
      });
    }
    buttons.forEach(function (b) { b.classList.toggle("iv-on", b.dataset.heads === "0"); });

    const info = IV.el("div", "iv-info", "Hover or click a token.");
    root.appendChild(info);
    const spans = IV.tokenStrip(root, data.tokens, data.n_prompt);
    const canvas = IV.el("canvas", "iv-canvas");
    const side = Math.min(360, Math.max(120, 8 * T));
    canvas.width = canvas.height = side;
    root.appendChild(canvas);
    const image = document.createElement("canvas");
    const note = IV.el("div", "iv-note", "rows kept: " + data.kept + "; up to " + data.row_keys +
                       " keys per row, weights in steps of 1/" + data.levels +
                       (T > side ? "; each pixel: the largest weight it covers" : ""));
    root.appendChild(note);

    // The pattern at min(T, side) pixels a side: one pixel per weight, or, for a long prompt,
    // the largest weight each pixel covers. Built from the sparse rows: O(entries), not O(T^2).
    const grid = Math.min(T, side);
    image.width = image.height = grid;
    function paintPattern() {
      const ctx = image.getContext("2d");
      const pixels = ctx.createImageData(grid, grid);
      const cells = new Float32Array(grid * grid);
      const sum = new Float32Array(T), touched = [];
      for (let q = 0; q < T; q++) {
        state.heads.forEach(function (h) {
          const r = (state.layer * H + h) * T + q;
          for (let i = offsets[r]; i < offsets[r + 1]; i++) {
            if (sum[keys[i]] === 0) touched.push(keys[i]);
            sum[keys[i]] += levels[i];
          }
        });
        const y = Math.floor(q * grid / T) * grid;
        touched.forEach(function (k) {
          const cell = y + Math.floor(k * grid / T);
          cells[cell] = Math.max(cells[cell], sum[k] * scale / state.heads.length);
          sum[k] = 0;
        });
        touched.length = 0;
      }
      for (let i = 0; i < grid * grid; i++) {
        const w = Math.min(1, cells[i]);
        pixels.data[4 * i] = 255 - 218 * w;
        pixels.data[4 * i + 1] = 255 - 156 * w;
        pixels.data[4 * i + 2] = 255 - 20 * w;
        pixels.data[4 * i + 3] = 255;
      }
      ctx.putImageData(pixels, 0, 0);
    }

    function paintCanvas() {
      const ctx = canvas.getContext("2d");
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(image, 0, 0, side, side);
      if (state.query !== null) {
        ctx.strokeStyle = "rgb(" + READERS + ")";
        const y = (state.query + 0.5) * side / T;
        ctx.beginPath(); ctx.moveTo(0, y); ctx.lineTo(side, y); ctx.stroke();
      }
    }

    // Only the spans shaded before and those shaded now are touched: a hover over 2,048
    // tokens changes a few dozen spans, not all of them.
    let marked = [];
    function focus(query) {
      const reads = row(query), readBy = column(query);
      marked.forEach(function (pos) {
        IV.shade(spans[pos], 0, KEYS);
        spans[pos].dataset.readBy = "0.0000";
        spans[pos].style.boxShadow = "";
      });
      if (state.query !== null) spans[state.query].classList.remove("iv-focus");
      state.query = query;
      spans[query].classList.add("iv-focus");
      marked = [];
      let best = 0, kept = 0;
      for (let pos = 0; pos < T; pos++) {
        kept += reads[pos];
        if (reads[pos] > reads[best]) best = pos;
        if (reads[pos] === 0 && readBy[pos] === 0) continue;
        marked.push(pos);
        IV.shade(spans[pos], reads[pos], KEYS);
        spans[pos].dataset.readBy = readBy[pos].toFixed(4);
        spans[pos].style.boxShadow = readBy[pos] > 0
          ? "inset 0 -4px 0 rgba(" + READERS + "," + Math.min(1, readBy[pos]).toFixed(3) + ")" : "";
      }
      info.textContent = "layer " + state.layer + ", " + state.label + ": position " + query +
        " " + JSON.stringify(data.tokens[query]) + " reads most from position " + best + " " +
        JSON.stringify(data.tokens[best]) + " (" + IV.pct(reads[best]) + "); the keys shown " +
        "hold " + IV.pct(kept) + " of its weight" +
        (state.pinned ? "; pinned (click again to release)" : "");
      paintCanvas();
    }

    function redraw() {
      paintPattern();
      if (state.query !== null) focus(state.query); else paintCanvas();
    }

    spans.forEach(function (span, pos) {
      span.addEventListener("mouseenter", function () { if (!state.pinned) focus(pos); });
      span.addEventListener("click", function () {
        state.pinned = !(state.pinned && state.query === pos);
        focus(pos);
      });
    });
    canvas.addEventListener("mousemove", function (e) {
      if (state.pinned) return;
      const rect = canvas.getBoundingClientRect();
      const query = Math.min(T - 1, Math.floor((e.clientY - rect.top) / rect.height * T));
      if (query !== state.query) focus(query);
    });
    redraw();
    focus(data.n_prompt - 1);  // the last prompt token, until the mouse picks another

    return {
      // For tests and scripts: what is shown now, as numbers.
      state: function () {
        return { layer: state.layer, heads: state.heads.slice(), query: state.query,
                 pinned: state.pinned,
                 weights: state.query === null ? null : Array.from(row(state.query)),
                 readBy: state.query === null ? null : Array.from(column(state.query)) };
      },
    };
  };
})();
