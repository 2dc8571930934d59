// The token's journey: one position followed through the layers (the stream's size, what
// attention and the MLP wrote, where the heads read, the experts, the lens's guess) down to the
// sampling boundary. Click an underlined token to follow that position instead.
(function () {
  "use strict";
  const IV = window.InterpViews;

  IV.renderers.journey = async function (root, data) {
    const state = { pos: null };
    const info = IV.el("div", "iv-info", "Click an underlined token to follow it.");
    root.appendChild(info);
    const spans = IV.tokenStrip(root, data.tokens, data.n_prompt);
    const path = IV.el("div", "iv-path");
    root.appendChild(path);

    function bar(value, max, rgb) {
      const outer = IV.el("span", "iv-bar");
      const inner = IV.el("span", "iv-fill");
      inner.style.width = (value === null ? 0 : 100 * value / max).toFixed(1) + "%";
      inner.style.backgroundColor = "rgb(" + rgb + ")";
      outer.appendChild(inner);
      outer.title = value === null ? "" : value.toFixed(2);
      return outer;
    }

    function follow(pos) {
      state.pos = pos;
      const rows = data.journeys[String(pos)];
      const layers = rows.filter(function (r) { return r.stage === "layer"; });
      const boundary = rows.find(function (r) { return r.stage === "boundary"; });
      // Each bar against its own largest value over the layers: writes are far smaller than
      // the stream they land in, and would not show on one scale.
      const max = {};
      ["resid_norm", "attn_write", "mlp_write"].forEach(function (name) {
        max[name] = Math.max.apply(null, layers.map(function (r) { return r[name] || 0; }));
      });
      spans.forEach(function (s, p) { s.classList.toggle("iv-focus", p === pos); });
      info.textContent = "Following " + JSON.stringify(data.tokens[pos]) + " at position " + pos +
        ". Bars, each against its largest layer: |x| after the layer (grey), |attention write| " +
        "(blue), |MLP write| (orange); hover a bar for its value.";
      path.replaceChildren();
      layers.forEach(function (r) {
        const line = IV.el("div", "iv-step");
        line.dataset.layer = r.layer;
        line.appendChild(IV.el("span", "iv-step-name", "layer " + r.layer));
        const bars = IV.el("span", "iv-bars");
        bars.appendChild(bar(r.resid_norm, max.resid_norm, "120,120,120"));
        bars.appendChild(bar(r.attn_write, max.attn_write, "37,99,235"));
        bars.appendChild(bar(r.mlp_write, max.mlp_write, "234,88,12"));
        line.appendChild(bars);
        const text = IV.el("span", "iv-step-text");
        text.appendChild(IV.el("span", "iv-reads", "reads " + r.sources));
        if (r.experts) text.appendChild(IV.el("span", "iv-experts-used", "experts " + r.experts));
        const guess = IV.el("span", "iv-guess", "lens " + r.lens);
        guess.style.backgroundColor = "rgba(37,99,235," + (0.6 * r.top1_prob).toFixed(3) + ")";
        text.appendChild(guess);
        line.appendChild(text);
        path.appendChild(line);
      });
      const end = IV.el("div", "iv-step iv-boundary");
      end.appendChild(IV.el("span", "iv-step-name", "boundary"));
      const text = IV.el("span", "iv-step-text");
      text.appendChild(IV.el("span", null, "candidates " + boundary.lens));
      text.appendChild(IV.el("span", "iv-chosen", boundary.chosen
        ? "chosen " + JSON.stringify(boundary.chosen) + " (" +
          (boundary.chosen_prob === null ? "" : "p = " + boundary.chosen_prob.toFixed(3) + ", ") +
          (boundary.sampled ? "generated" : "the text's next token") + ")"
        : "the trace ends here"));
      end.appendChild(text);
      path.appendChild(end);
    }

    Object.keys(data.journeys).forEach(function (key) {
      const span = spans[+key];
      span.classList.add("iv-has");
      span.addEventListener("click", function () { follow(+key); });
    });
    follow(+Object.keys(data.journeys)[0]);

    return { state: function () {
      return { pos: state.pos, steps: path.querySelectorAll(".iv-step").length };
    } };
  };
})();
