// Logit lens: a layer x position grid on a canvas, shaded by the lens's top-1 probability and
// labelled with its top-1 token where a cell is wide enough. Hover a cell for the top-k.
(function () {
  "use strict";
  const IV = window.InterpViews;
  const ROW = 20, LEFT = 64, HEAD = 22;

  IV.renderers.lens = async function (root, data) {
    const T = data.tokens.length, L = data.n_layers, K = data.k;
    const [top, probs] = await Promise.all([data.top, data.probs].map(IV.unpack));
    const cell = Math.max(6, Math.min(72, Math.floor(900 / T)));
    const state = { layer: null, pos: null, top: null };

    root.appendChild(IV.el("div", "iv-info",
      "Rows: the stream after each layer read out as the next-token distribution (last layer at " +
      "the top). Shade: the top-1 probability. Hover a cell for the top " + K + "."));
    const scroller = IV.el("div", "iv-scroll");
    root.appendChild(scroller);
    const canvas = IV.el("canvas", "iv-canvas");
    canvas.width = LEFT + T * cell;
    canvas.height = HEAD + L * ROW;
    scroller.appendChild(canvas);
    const tip = IV.tooltip(root);

    function at(layer, pos, rank) { return (layer * T + pos) * K + rank; }

    function fit(ctx, text, width) {  // canvas text is drawn, never parsed
      let s = text.replace(/\n/g, "");
      while (s.length > 1 && ctx.measureText(s).width > width) s = s.slice(0, -1);
      return ctx.measureText(s).width <= width ? s : "";
    }

    const ctx = canvas.getContext("2d");
    ctx.font = "11px sans-serif";
    ctx.textBaseline = "middle";
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    for (let pos = 0; pos < T; pos++) {
      ctx.fillStyle = pos >= data.n_prompt ? "#9a3412" : "#111";
      ctx.fillText(fit(ctx, data.tokens[pos], cell - 2), LEFT + pos * cell + 1, HEAD / 2);
    }
    for (let layer = 0; layer < L; layer++) {
      const y = HEAD + (L - 1 - layer) * ROW;
      ctx.fillStyle = "#111";
      ctx.fillText("layer " + layer, 4, y + ROW / 2);
      for (let pos = 0; pos < T; pos++) {
        const p = probs[at(layer, pos, 0)] / data.levels;
        ctx.fillStyle = "rgba(37,99,235," + p.toFixed(3) + ")";
        ctx.fillRect(LEFT + pos * cell, y, cell - 1, ROW - 1);
        if (cell >= 24) {
          ctx.fillStyle = p > 0.55 ? "#fff" : "#111";
          ctx.fillText(fit(ctx, data.vocab[top[at(layer, pos, 0)]], cell - 3),
                       LEFT + pos * cell + 2, y + ROW / 2);
        }
      }
    }

    function hover(layer, pos, x, y) {
      state.layer = layer; state.pos = pos; state.top = [];
      const lines = [["layer " + layer + ", position " + pos, JSON.stringify(data.tokens[pos])]];
      for (let r = 0; r < K; r++) {
        const text = data.vocab[top[at(layer, pos, r)]];
        const p = probs[at(layer, pos, r)] / data.levels;
        state.top.push([text, p]);
        lines.push([JSON.stringify(text), IV.pct(p)]);
      }
      tip.show(lines, x, y);
    }

    canvas.addEventListener("mousemove", function (e) {
      const rect = canvas.getBoundingClientRect();
      const pos = Math.floor((e.clientX - rect.left - LEFT) / cell);
      const row = Math.floor((e.clientY - rect.top - HEAD) / ROW);
      if (pos < 0 || pos >= T || row < 0 || row >= L) { tip.hide(); return; }
      hover(L - 1 - row, pos, e.clientX - root.getBoundingClientRect().left,
            e.clientY - root.getBoundingClientRect().top);
    });
    canvas.addEventListener("mouseleave", tip.hide);

    return {
      state: function () { return { layer: state.layer, pos: state.pos, top: state.top }; },
      // Where cell (layer, pos) sits in the page, for tests that move the mouse there.
      cellCenter: function (layer, pos) {
        const rect = canvas.getBoundingClientRect();
        return { x: rect.left + LEFT + (pos + 0.5) * cell,
                 y: rect.top + HEAD + (L - 1 - layer + 0.5) * ROW };
      },
    };
  };
})();
