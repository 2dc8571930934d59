// Shared by every view: unpacking the embedded arrays, token strips, shading, mounting.
// Token and prompt text is only ever set through textContent, never parsed as markup.
(function () {
  "use strict";
  const IV = (window.InterpViews = window.InterpViews || { renderers: {}, views: {} });
  const ARRAYS = { uint8: Uint8Array, uint16: Uint16Array, uint32: Uint32Array };

  // {dtype, n, data: base64(gzip(little-endian bytes))} -> a typed array.
  IV.unpack = async function (packed) {
    const bin = atob(packed.data);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    const buffer = await new Response(stream).arrayBuffer();
    const out = new ARRAYS[packed.dtype](buffer);
    if (out.length !== packed.n) throw new Error("corrupt array: " + out.length + " != " + packed.n);
    return out;
  };

  IV.el = function (tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  };

  // One span per token (text only; the payload made control characters visible, and a
  // newline still breaks the line); returns the spans, indexed by position.
  IV.tokenStrip = function (parent, tokens, nPrompt) {
    const strip = IV.el("div", "iv-tokens");
    const spans = tokens.map(function (text, pos) {
      const span = IV.el("span", pos >= nPrompt ? "iv-tok iv-gen" : "iv-tok", text);
      span.dataset.pos = pos;
      strip.appendChild(span);
      return span;
    });
    parent.appendChild(strip);
    return spans;
  };

  // Background of `span` for a weight w in [0, 1]; the weight stays readable in data-weight.
  IV.shade = function (span, w, rgb) {
    span.dataset.weight = w.toFixed(4);
    span.style.backgroundColor = w > 0 ? "rgba(" + rgb + "," + Math.min(1, w).toFixed(3) + ")" : "";
    span.classList.toggle("iv-dark", w > 0.55);
  };

  IV.select = function (parent, label, options, onChange) {
    const wrap = IV.el("label", "iv-control", label + " ");
    const select = IV.el("select");
    options.forEach(function (o) { select.appendChild(new Option(o[1], String(o[0]))); });
    select.addEventListener("change", function () { onChange(select.value); });
    wrap.appendChild(select);
    parent.appendChild(wrap);
    return select;
  };

  IV.pct = function (w) { return (100 * w).toFixed(1) + "%"; };

  // A floating box of text lines near the mouse (lines: arrays of strings, one cell each).
  IV.tooltip = function (root) {
    const box = IV.el("div", "iv-tip");
    box.hidden = true;
    root.appendChild(box);
    return {
      box: box,
      show: function (lines, x, y) {
        box.replaceChildren();
        lines.forEach(function (cells) {
          const row = IV.el("div", "iv-tip-row");
          cells.forEach(function (c) { row.appendChild(IV.el("span", null, c)); });
          box.appendChild(row);
        });
        box.style.left = x + 12 + "px";
        box.style.top = y + 12 + "px";
        box.hidden = false;
      },
      hide: function () { box.hidden = true; },
    };
  };

  async function mount(node) {
    if (node.dataset.state) return;
    node.dataset.state = "loading";
    try {
      const data = JSON.parse(document.getElementById(node.dataset.payload).textContent);
      const render = IV.renderers[node.dataset.kind];
      if (!render) throw new Error("unknown view " + node.dataset.kind);
      IV.views[node.id] = await render(node, data);
      node.dataset.state = "ready";
    } catch (err) {
      node.dataset.state = "failed";
      node.replaceChildren(IV.el("p", "iv-error", "This view failed: " + err));
      console.error(err);
    }
  }

  IV.mountAll = function () {
    return Promise.all(Array.from(document.querySelectorAll(".iv-view")).map(mount));
  };
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", IV.mountAll);
  } else {
    setTimeout(IV.mountAll, 0);  // renderers of the later files register first
  }
})();
