// fpmon report: draws each target's timeline and share chart with uPlot from the JSON block.
// Every string from the history reaches the page as textContent or canvas text, never as HTML.
(function () {
  "use strict";
  const started = performance.now();
  const data = JSON.parse(document.getElementById("report-data").textContent);
  const B = data.buckets;
  const HALF = 0.38; // half the height of a timeline band, in rows
  const ROW = 22; // pixels per timeline row
  // Okabe-Ito (as report.css); errors are a dark grey.
  const COLOURS = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#999999"];
  const ERROR_COLOUR = "#444444";
  const tooltip = document.getElementById("tooltip");
  const xs = [];
  for (let i = 0; i <= B.count; i++) xs.push(B.start + i * B.size);

  // An opaque pattern (the colour, then white marks) so that values differ without colour too.
  const patterns = new Map();
  function fill(band) {
    const colour = band.colour === "err" ? ERROR_COLOUR : COLOURS[band.colour];
    const key = colour + band.pattern;
    if (!patterns.has(key)) {
      const tile = document.createElement("canvas");
      tile.width = tile.height = 8;
      const c = tile.getContext("2d");
      c.fillStyle = colour;
      c.fillRect(0, 0, 8, 8);
      c.fillStyle = c.strokeStyle = "rgba(255,255,255,0.6)";
      c.lineWidth = 2;
      const line = (x0, y0, x1, y1) => { c.beginPath(); c.moveTo(x0, y0); c.lineTo(x1, y1); c.stroke(); };
      switch (band.pattern) {
        case 1: line(-2, 10, 10, -2); line(-2, 2, 2, -2); line(6, 10, 10, 6); break;
        case 2: c.beginPath(); c.arc(4, 4, 1.6, 0, 2 * Math.PI); c.fill(); break;
        case 3: line(0, 4, 8, 4); break;
        case 4: c.lineWidth = 1.5; line(0, 0, 8, 8); line(0, 8, 8, 0); break;
        case 5: line(4, 0, 4, 8); break;
      }
      patterns.set(key, document.createElement("canvas").getContext("2d").createPattern(tile, "repeat"));
    }
    return patterns.get(key);
  }

  const stamp = (seconds) => new Date(seconds * 1000).toISOString().replace("T", " ").replace(/(:00)?\.000Z$/, "") + " UTC";
  const bucketText = (i) => stamp(xs[i]) + " to " + stamp(xs[i + 1]);
  const percent = (share) => (share * 100).toFixed(share === 1 || share === 0 ? 0 : 1) + "%";

  function bucketAt(u) {
    const x = u.posToVal(u.cursor.left, "x");
    const i = Math.floor((x - B.start) / B.size);
    return i >= 0 && i < B.count ? i : -1;
  }

  function showTip(u, lines) {
    if (!lines) {
      tooltip.hidden = true;
      return;
    }
    tooltip.textContent = lines.join("\n");
    tooltip.hidden = false;
    const box = u.over.getBoundingClientRect();
    const left = Math.min(box.left + u.cursor.left + 14, window.innerWidth - tooltip.offsetWidth - 4);
    tooltip.style.left = Math.max(4, left) + "px";
    tooltip.style.top = box.top + u.cursor.top + 14 + "px";
  }

  // The learning phase shaded, the change events marked along the top.
  function overlays(t) {
    return (u) => {
      const ctx = u.ctx;
      const { left, top, width, height } = u.bbox;
      const [x0, x1] = [u.scales.x.min, u.scales.x.max];
      ctx.save();
      if (t.learning) {
        const from = Math.max(t.learning[0], x0);
        const to = Math.min(t.learning[1] === null ? x1 : t.learning[1], x1);
        if (to > from) {
          const a = u.valToPos(from, "x", true);
          const b = u.valToPos(to, "x", true);
          ctx.fillStyle = "rgba(0, 0, 0, 0.10)";
          ctx.fillRect(a, top, b - a, height);
          ctx.fillStyle = "#222";
          ctx.font = 11 * devicePixelRatio + "px sans-serif";
          ctx.textBaseline = "top";
          ctx.fillText("learning", a + 3 * devicePixelRatio, top + 2 * devicePixelRatio);
        }
      }
      ctx.fillStyle = "#000";
      const mark = 5 * devicePixelRatio;
      for (const at of t.changes) {
        if (at < x0 || at > x1) continue;
        const x = u.valToPos(at, "x", true);
        ctx.beginPath();
        ctx.moveTo(x - mark, top);
        ctx.lineTo(x + mark, top);
        ctx.lineTo(x, top + 1.6 * mark);
        ctx.fill();
      }
      ctx.restore();
    };
  }

  // Buckets with no sample at all (no check ran then) in light grey, under the bands: a gap
  // in a band then reads "checked, not served" only where the background is white.
  function unchecked(t) {
    const errors = t.bands.filter((b) => b.kind === "error");
    const empty = t.ok.map((ok, i) => ok === 0 && !errors.some((b) => b.counts[i] > 0));
    return (u) => {
      const ctx = u.ctx;
      ctx.save();
      ctx.fillStyle = "#ececec";
      empty.forEach((none, i) => {
        if (!none) return;
        const a = u.valToPos(xs[i], "x", true);
        ctx.fillRect(a, u.bbox.top, u.valToPos(xs[i + 1], "x", true) - a, u.bbox.height);
      });
      ctx.restore();
    };
  }

  // Axis times in UTC, as the tables: seconds for short ranges, dates for long ones.
  const span = B.count * B.size;
  const tick = (ts) => {
    const text = new Date(ts * 1000).toISOString();
    if (span <= 3600) return text.slice(11, 19);
    if (span <= 3 * 86400) return text.slice(5, 10) + " " + text.slice(11, 16);
    return text.slice(0, 10);
  };
  const xAxis = { space: span <= 3 * 86400 ? 90 : 80, grid: { stroke: "#eee" }, values: (u, splits) => splits.map(tick) };
  const utc = (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC");

  function timeline(el, t) {
    const rows = t.bands;
    const series = [{}];
    const values = [xs];
    rows.forEach((band, k) => {
      const ys = band.counts.map((n) => (n > 0 ? k + HALF : k - HALF));
      ys.push(ys[ys.length - 1]); // the last bucket's right edge
      values.push(ys);
      series.push({
        label: band.label,
        width: 0,
        fill: () => fill(band),
        fillTo: () => k - HALF,
        paths: uPlot.paths.stepped({ align: 1 }),
        points: { show: false },
      });
    });
    const opts = {
      width: el.clientWidth,
      height: 46 + Math.max(rows.length, 1) * ROW,
      tzDate: utc,
      legend: { show: false },
      cursor: { points: { show: false }, drag: { x: true, y: false } },
      scales: { x: { time: true, range: [xs[0], xs[xs.length - 1]] }, y: { range: [-0.5, rows.length - 0.5], dir: -1 } },
      series,
      axes: [
        xAxis,
        {
          size: 220,
          gap: 4,
          grid: { show: false },
          ticks: { show: false },
          splits: () => rows.map((_, k) => k),
          values: (u, splits) => splits.map((k) => rows[k] ? rows[k].axis : ""),
        },
      ],
      hooks: {
        drawClear: [unchecked(t)],
        draw: [overlays(t)],
        setCursor: [
          (u) => {
            const i = bucketAt(u);
            const k = Math.round(u.posToVal(u.cursor.top, "y"));
            const band = rows[k];
            if (i < 0 || !band || u.cursor.left < 0) return showTip(u, null);
            const n = band.counts[i];
            const what = band.kind === "error" ? "error " + band.value : band.kind + " " + band.value;
            const lines = [what + (band.locked ? " (in the lock)" : ""), bucketText(i)];
            if (band.kind === "error") lines.push(n + " failed " + (n === 1 ? "sample" : "samples"));
            else if (n > 0) lines.push(n + " of " + t.ok[i] + " successful samples (" + percent(n / t.ok[i]) + ")");
            else lines.push(t.ok[i] ? "not served (" + t.ok[i] + " successful samples)" : "no successful sample");
            showTip(u, lines);
          },
        ],
      },
    };
    return new uPlot(opts, values, el);
  }

  function share(el, t) {
    const values = t.bands.filter((b) => b.kind === "fingerprint");
    // Painted from the top of the stack down, each filled to 0 over the one before it.
    const tops = values.map((_, k) =>
      t.ok.map((ok, i) => (ok ? values.slice(0, k + 1).reduce((sum, b) => sum + b.counts[i], 0) / ok : 0)),
    );
    const order = values.map((_, k) => values.length - 1 - k);
    const series = [{}];
    const data = [xs];
    for (const k of order) {
      const ys = tops[k].slice();
      ys.push(ys[ys.length - 1]);
      data.push(ys);
      series.push({ label: values[k].label, width: 0, fill: () => fill(values[k]), paths: uPlot.paths.stepped({ align: 1 }), points: { show: false } });
    }
    const opts = {
      width: el.clientWidth,
      height: 170,
      tzDate: utc,
      legend: { show: false },
      cursor: { points: { show: false }, drag: { x: true, y: false } },
      scales: { x: { time: true, range: [xs[0], xs[xs.length - 1]] }, y: { range: [0, 1] } },
      series,
      axes: [xAxis, { size: 220, values: (u, splits) => splits.map((s) => Math.round(s * 100) + "%") }],
      hooks: {
        drawClear: [unchecked(t)],
        draw: [overlays(t)],
        setCursor: [
          (u) => {
            const i = bucketAt(u);
            if (i < 0 || u.cursor.left < 0) return showTip(u, null);
            if (!t.ok[i]) return showTip(u, [bucketText(i), "no successful sample"]);
            const y = u.posToVal(u.cursor.top, "y");
            const k = tops.findIndex((top) => y <= top[i]);
            const lines = [];
            if (k >= 0) lines.push("fingerprint " + values[k].value + ": " + percent(values[k].counts[i] / t.ok[i]));
            lines.push(bucketText(i) + ", " + t.ok[i] + " successful samples:");
            values.forEach((b) => b.counts[i] && lines.push("  " + b.value + " " + percent(b.counts[i] / t.ok[i])));
            showTip(u, lines);
          },
        ],
      },
    };
    return new uPlot(opts, data, el);
  }

  const charts = [];
  data.targets.forEach((t, index) => {
    const tl = document.getElementById("timeline-" + index);
    if (tl) charts.push({ target: t.name, kind: "timeline", plot: timeline(tl, t), el: tl });
    const sh = document.getElementById("share-" + index);
    if (sh) charts.push({ target: t.name, kind: "share", plot: share(sh, t), el: sh });
  });
  for (const chart of charts) chart.plot.over.addEventListener("mouseleave", () => (tooltip.hidden = true));

  // Fit the charts to the page: on resize, and to the A4 text width while printing.
  function fit() {
    for (const chart of charts) chart.plot.setSize({ width: chart.el.clientWidth, height: chart.plot.height });
  }
  let resizing = 0;
  window.addEventListener("resize", () => {
    cancelAnimationFrame(resizing);
    resizing = requestAnimationFrame(fit);
  });
  window.addEventListener("beforeprint", fit);
  window.addEventListener("afterprint", fit);

  window.fpmonReport = { charts, renderMs: performance.now() - started };
})();
