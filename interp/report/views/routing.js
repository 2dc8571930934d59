// Routing: hover a token for the experts it chose in every MoE layer and their weights; pick a
// layer and click an expert to shade the tokens routed to it (by the weight it got).
(function () {
  "use strict";
  const IV = window.InterpViews;
  const ROUTED = "22,163,74";

  IV.renderers.routing = async function (root, data) {
    const T = data.tokens.length, K = data.top_k, E = data.n_experts;
    const [experts, weights] = await Promise.all([data.experts, data.weights].map(IV.unpack));
    const state = { layer: 0, expert: null, token: null };  // layer: index into data.layers

    function choices(m, pos) {  // [[expert, weight]] of MoE layer m at pos, heaviest first
      const out = [];
      for (let r = 0; r < K; r++) {
        const i = (m * T + pos) * K + r;
        out.push([experts[i], weights[i] / data.levels]);
      }
      return out;
    }

    const controls = IV.el("div", "iv-controls");
    root.appendChild(controls);
    IV.select(controls, "layer", data.layers.map(function (l, m) { return [m, "layer " + l]; }),
              function (v) { state.layer = +v; drawExperts(); shadeExpert(); });
    const bar = IV.el("div", "iv-experts");
    controls.appendChild(bar);
    const info = IV.el("div", "iv-info",
      "Click an expert to shade the tokens routed to it; hover a token for its experts.");
    root.appendChild(info);
    const spans = IV.tokenStrip(root, data.tokens, data.n_prompt);
    const detail = IV.el("table", "iv-table");
    root.appendChild(detail);

    function drawExperts() {
      bar.replaceChildren();
      const load = new Uint32Array(E);
      for (let pos = 0; pos < T; pos++) {
        choices(state.layer, pos).forEach(function (c) { load[c[0]] += 1; });
      }
      for (let e = 0; e < E; e++) {
        const b = IV.el("button", "iv-head" + (e === state.expert ? " iv-on" : ""), "E" + e);
        b.type = "button";
        b.title = load[e] + " of " + T + " tokens";
        b.dataset.expert = e;
        b.style.boxShadow = "inset 0 -4px 0 rgba(" + ROUTED + "," + (load[e] / T).toFixed(3) + ")";
        b.addEventListener("click", function () {
          state.expert = state.expert === e ? null : e;
          drawExperts(); shadeExpert();
        });
        bar.appendChild(b);
      }
    }

    function routedWeights() {  // [pos] the weight expert state.expert got there (0: not chosen)
      const out = new Float32Array(T);
      if (state.expert === null) return out;
      for (let pos = 0; pos < T; pos++) {
        choices(state.layer, pos).forEach(function (c) { if (c[0] === state.expert) out[pos] = c[1]; });
      }
      return out;
    }

    function shadeExpert() {
      const w = routedWeights();
      spans.forEach(function (span, pos) { IV.shade(span, w[pos], ROUTED); });
      if (state.expert !== null) {
        const n = w.filter(function (x) { return x > 0; }).length;
        info.textContent = "layer " + data.layers[state.layer] + ", expert " + state.expert +
          ": " + n + " of " + T + " tokens routed to it (shade: its weight)";
      }
    }

    function showToken(pos) {
      state.token = pos;
      detail.replaceChildren();
      const head = detail.insertRow();
      ["layer", "experts (weight)"].forEach(function (t) { head.appendChild(IV.el("th", null, t)); });
      data.layers.forEach(function (l, m) {
        const tr = detail.insertRow();
        tr.appendChild(IV.el("td", null, String(l)));
        const td = IV.el("td");
        choices(m, pos).forEach(function (c) {
          const chip = IV.el("span", "iv-chip", "E" + c[0] + " " + c[1].toFixed(2));
          chip.style.backgroundColor = "rgba(" + ROUTED + "," + c[1].toFixed(3) + ")";
          td.appendChild(chip);
        });
        tr.appendChild(td);
      });
      const caption = detail.createCaption();
      caption.textContent = "position " + pos + " " + JSON.stringify(data.tokens[pos]);
    }

    spans.forEach(function (span, pos) {
      span.addEventListener("mouseenter", function () { showToken(pos); });
    });
    drawExperts();
    showToken(data.n_prompt - 1);

    return {
      state: function () {
        return { layer: data.layers[state.layer], expert: state.expert, token: state.token,
                 weights: Array.from(routedWeights()),
                 choices: state.token === null ? null : data.layers.map(function (l, m) {
                   return choices(m, state.token);
                 }) };
      },
    };
  };
})();
