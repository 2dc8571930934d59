// Features: click a token for its top dictionary features; click a feature to shade the
// prompt by it and to see its top contexts from a survey (each token shaded by the feature's
// activation there), its density and where that density sits in the histogram.
(function () {
  "use strict";
  const IV = window.InterpViews;
  const RGB = "234,88,12";

  IV.renderers.features = async function (root, data) {
    const state = { dict: 0, pos: data.n_prompt - 1, feature: null };
    const controls = IV.el("div", "iv-controls");
    root.appendChild(controls);
    if (data.dictionaries.length > 1) {
      IV.select(controls, "dictionary", data.dictionaries.map(function (d, i) {
        return [i, d.name + " (" + d.hook + ")"];
      }), function (v) { state.dict = Number(v); state.feature = null; draw(); });
    }
    const info = IV.el("div", "iv-info");
    root.appendChild(info);
    const spans = IV.tokenStrip(root, data.tokens, data.n_prompt);
    const list = IV.el("div");
    const featurePane = IV.el("div");
    root.appendChild(list);
    root.appendChild(featurePane);
    spans.forEach(function (span, pos) {
      span.addEventListener("click", function () { state.pos = pos; state.feature = null; draw(); });
    });

    function dict() { return data.dictionaries[state.dict]; }

    function activationAt(pos, feature) {
      const hit = dict().top[pos].find(function (pair) { return pair[0] === feature; });
      return hit ? hit[1] : 0;
    }

    function draw() {
      const d = dict();
      const top = d.top[state.pos] || [];
      if (state.feature === null && top.length) state.feature = top[0][0];
      const err = d.relative_error[state.pos];
      info.textContent = d.name + " at " + d.hook + ": position " + state.pos + " " +
        JSON.stringify(data.tokens[state.pos]) + ", " + d.l0[state.pos] + " features active, " +
        "reconstruction error " + (err === null ? "-" : IV.pct(err)) + " of the activation's norm";
      const acts = spans.map(function (_, pos) { return activationAt(pos, state.feature); });
      const peak = Math.max.apply(null, acts.concat([1e-9]));
      spans.forEach(function (span, pos) {
        IV.shade(span, acts[pos] / peak, RGB);
        span.classList.toggle("iv-focus", pos === state.pos);
      });
      drawList(d, top);
      drawFeature(d);
    }

    function drawList(d, top) {
      list.replaceChildren();
      const table = IV.el("table", "iv-table");
      const head = IV.el("tr");
      ["feature", "activation", "density"].forEach(function (h) { head.appendChild(IV.el("th", null, h)); });
      table.appendChild(head);
      const biggest = top.length ? top[0][1] : 1;
      top.forEach(function (pair) {
        const row = IV.el("tr", pair[0] === state.feature ? "iv-on" : "");
        row.dataset.feature = pair[0];
        row.style.cursor = "pointer";
        row.appendChild(IV.el("td", null, String(pair[0])));
        const cell = IV.el("td");
        const bar = IV.el("span", "iv-chip", pair[1].toFixed(3));
        bar.style.backgroundColor = "rgba(" + RGB + "," + (pair[1] / biggest).toFixed(3) + ")";
        cell.appendChild(bar);
        row.appendChild(cell);
        const dens = d.density ? d.density[String(pair[0])] : undefined;
        row.appendChild(IV.el("td", null, dens === undefined ? "-" : IV.pct(dens)));
        row.addEventListener("click", function () { state.feature = pair[0]; draw(); });
        table.appendChild(row);
      });
      list.appendChild(top.length ? table : IV.el("p", "iv-note", "No feature fires here."));
    }

    function drawFeature(d) {
      featurePane.replaceChildren();
      if (state.feature === null) return;
      featurePane.appendChild(IV.el("div", "iv-label", "feature " + state.feature));
      if (!d.contexts) {
        featurePane.appendChild(IV.el("p", "iv-note",
          "Top contexts and densities come from a survey: interp survey --features DIR."));
        return;
      }
      const contexts = d.contexts[String(state.feature)] || [];
      if (!contexts.length) featurePane.appendChild(IV.el("p", "iv-note", "It never fired in the survey."));
      contexts.forEach(function (c) {
        const line = IV.el("div", "iv-context");
        const peak = Math.max.apply(null, c.acts.concat([1e-9]));
        c.tokens.forEach(function (text, i) {
          const span = IV.el("span", "iv-tok" + (i === c.focus ? " iv-focus" : ""), text);
          IV.shade(span, c.acts[i] / peak, RGB);
          span.title = c.acts[i].toFixed(3);
          line.appendChild(span);
        });
        line.appendChild(IV.el("span", "iv-note", "  " + c.activation.toFixed(3)));
        featurePane.appendChild(line);
      });
      drawHistogram(d, d.density[String(state.feature)]);
    }

    function drawHistogram(d, density) {
      const box = IV.el("div", "iv-hist");
      const most = Math.max.apply(null, d.histogram.map(function (b) { return b[2]; }).concat([1]));
      const mark = density > 0 ? Math.log10(density) : null;
      d.histogram.forEach(function (b) {
        const bar = IV.el("span", "iv-hist-bar");
        bar.style.height = (60 * b[2] / most).toFixed(1) + "px";
        const here = mark !== null && mark >= b[0] && (mark < b[1] || b[1] === 0);
        bar.classList.toggle("iv-on", here);
        bar.title = "10^" + b[0] + " to 10^" + b[1] + ": " + b[2] + " features";
        box.appendChild(bar);
      });
      featurePane.appendChild(IV.el("div", "iv-note", "Feature density (log10 share of " +
        d.survey_tokens + " survey tokens, 10^-7 to 1); dead " + IV.pct(d.dead_fraction) +
        ", dense " + IV.pct(d.dense_fraction) + ". The dark bar holds this feature."));
      featurePane.appendChild(box);
    }

    draw();
    return {
      state: function () { return { dict: state.dict, pos: state.pos, feature: state.feature }; },
      select: function (pos, feature) { state.pos = pos; state.feature = feature; draw(); },
    };
  };
})();
