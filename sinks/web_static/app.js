// nearfield live view: receives view states over Server-Sent Events (/events) and draws them
// on <canvas> elements. Plain JavaScript, no library, no network access beyond this server.
// Inside: radians and metres, as in the frames; degrees only on labels.
"use strict";

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];
const FAULT = { hit: "#1f9d55", miss: "#d62728", fa: "#f59e0b", idle: "#aab3bd" };
const DEG = 180 / Math.PI;
const TRAIL = 120;              // frames of trail in the top view and of errors in the zoom panel
let S = null;                   // latest view state
let received = 0;
let lastArrival = 0;
let ended = false;
let pending = false;
let topScale = 0;               // top-view extent (m), changed with hysteresis so the view stays still
const truthTrail = [];          // per truth index: [[x, y], ...]
const estTrail = [];            // [[x, y, k], ...]
const errTrail = [];            // per target index: [[cross m, range m], ...]

const $ = (id) => document.getElementById(id);
const colour = (k) => COLORS[k % COLORS.length];
const xy = (t) => [t.range * Math.cos(t.theta), t.range * Math.sin(t.theta)];

function fmt(v, d = 2) {
  if (v === null || v === undefined || !isFinite(v)) return "–";
  return Number(v).toFixed(d);
}
function fmtLen(m) {            // metres with a readable unit
  if (m === null || m === undefined || !isFinite(m)) return "–";
  const a = Math.abs(m);
  if (a < 1e-3) return (m * 1e6).toFixed(0) + " µm";
  if (a < 1) return (m * 1e3).toFixed(a < 0.01 ? 2 : 1) + " mm";
  return m.toFixed(3) + " m";
}
function tickLen(m) {           // 1 mm, 10 mm, 1 m ...
  return m < 1e-3 ? `${+(m * 1e6).toPrecision(3)} µm` : m < 1 ? `${+(m * 1e3).toPrecision(3)} mm` : `${+m.toPrecision(3)} m`;
}
function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

// ---- canvas helpers ------------------------------------------------------------------------
function prep(id) {
  const c = $(id);
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(10, c.clientWidth), h = Math.max(10, c.clientHeight);
  if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
    c.width = Math.round(w * dpr);
    c.height = Math.round(h * dpr);
  }
  const g = c.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  g.font = "11px system-ui, 'DejaVu Sans', sans-serif";
  g.lineJoin = "round";
  return [g, w, h];
}

function niceStep(span, n) {
  const raw = span / Math.max(1, n);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  for (const m of [1, 2, 2.5, 5, 10]) if (raw <= m * mag) return m * mag;
  return 10 * mag;
}
function ticks(lo, hi, n) {
  const st = niceStep(hi - lo, n);
  const out = [];
  for (let v = Math.ceil(lo / st) * st; v <= hi + 1e-9 * st; v += st) out.push(Math.abs(v) < st * 1e-9 ? 0 : v);
  return out;
}
function tickLabel(v, st) {
  const d = Math.max(0, -Math.floor(Math.log10(st) + 1e-9));
  return v.toFixed(Math.min(d, 4));
}

// A plot box with axes. opts: {x: [lo, hi], y: [lo, hi], logx, xlabel, ylabel, xt, yt, noYLabels}
function axes(g, box, o) {
  const [L, T, W, H] = box;
  const lx = (v) => (o.logx ? Math.log10(v) : v);
  const x0 = lx(o.x[0]), x1 = lx(o.x[1]);
  const X = (v) => L + ((lx(v) - x0) / (x1 - x0)) * W;
  const Y = (v) => T + H - ((v - o.y[0]) / (o.y[1] - o.y[0])) * H;
  g.save();
  g.font = "11px system-ui, 'DejaVu Sans', sans-serif";
  g.strokeStyle = "#e7ebef"; g.lineWidth = 1; g.fillStyle = "#5d6671";
  let xt;
  if (o.logx) {
    xt = [];
    for (let e = Math.floor(x0); e <= Math.ceil(x1); e++)
      for (const m of [1, 2, 5]) { const v = m * Math.pow(10, e); if (v >= o.x[0] && v <= o.x[1]) xt.push(v); }
  } else xt = ticks(o.x[0], o.x[1], o.xt || 5);
  const xst = xt.length > 1 ? Math.abs(xt[1] - xt[0]) : 1;
  g.textAlign = "center"; g.textBaseline = "top";
  for (const v of xt) {
    const px = X(v);
    g.beginPath(); g.moveTo(px, T); g.lineTo(px, T + H); g.stroke();
    g.fillText(o.logx ? String(+v.toPrecision(3)) : tickLabel(v, xst), px, T + H + 3);
  }
  const yt = ticks(o.y[0], o.y[1], o.yt || 4);
  const yst = yt.length > 1 ? yt[1] - yt[0] : 1;
  g.textAlign = "right"; g.textBaseline = "middle";
  for (const v of yt) {
    const py = Y(v);
    g.beginPath(); g.moveTo(L, py); g.lineTo(L + W, py); g.stroke();
    if (!o.noYLabels) g.fillText(tickLabel(v, yst), L - 4, py);
  }
  g.strokeStyle = "#9aa4ae"; g.strokeRect(L + 0.5, T + 0.5, W - 1, H - 1);
  g.fillStyle = "#4a525c";
  if (o.xlabel) { g.textAlign = "center"; g.textBaseline = "bottom"; g.fillText(o.xlabel, L + W / 2, T + H + 30); }
  if (o.ylabel) {
    g.save(); g.translate(L - 34, T + H / 2); g.rotate(-Math.PI / 2);
    g.textAlign = "center"; g.textBaseline = "bottom"; g.fillText(o.ylabel, 0, 0); g.restore();
  }
  g.restore();
  return [X, Y];
}

function note(g, w, h, text) {
  g.save(); g.fillStyle = "#8a939d"; g.font = "italic 12px system-ui, 'DejaVu Sans', sans-serif";
  g.textAlign = "center"; g.textBaseline = "middle";
  text.split("\n").forEach((line, i, a) => g.fillText(line, w / 2, h / 2 + (i - (a.length - 1) / 2) * 16));
  g.restore();
}
function tri(g, x, y, s, fill, stroke) {       // a downward triangle (true value marker)
  g.beginPath(); g.moveTo(x - s, y - s); g.lineTo(x + s, y - s); g.lineTo(x, y + s * 0.6); g.closePath();
  g.fillStyle = fill; g.fill(); if (stroke) { g.strokeStyle = stroke; g.lineWidth = 1; g.stroke(); }
}
function cross(g, x, y, s, c, lw = 2.5) {
  g.strokeStyle = c; g.lineWidth = lw;
  g.beginPath(); g.moveTo(x - s, y - s); g.lineTo(x + s, y + s); g.moveTo(x - s, y + s); g.lineTo(x + s, y - s); g.stroke();
}
function segments(xs) {                        // split a sorted grid at gaps (> 3 x the median step)
  if (xs.length < 3) return [[0, xs.length]];
  const d = []; for (let i = 1; i < xs.length; i++) d.push(xs[i] - xs[i - 1]);
  const pos = d.filter((v) => v > 0).sort((a, b) => a - b);
  const med = pos.length ? pos[Math.floor(pos.length / 2)] : 0;
  const out = []; let a = 0;
  for (let i = 0; i < d.length; i++) if (med > 0 && d[i] > 3 * med) { out.push([a, i + 1]); a = i + 1; }
  out.push([a, xs.length]);
  return out;
}

// ---- top view ------------------------------------------------------------------------------
function drawTop() {
  const [g, w, h] = prep("c-top");
  if (!S) return note(g, w, h, "waiting for the first frame");
  const est = S.targets || [], truth = S.truth || [], coarse = S.coarse || [];
  let rmax = S.array.aperture * 2;
  for (const t of [...est, ...truth, ...coarse]) rmax = Math.max(rmax, t.range);
  const st4 = niceStep(rmax * 1.15, 4), want = st4 * Math.ceil((rmax * 1.15) / st4);
  if (!topScale || want > topScale || want < 0.6 * topScale) topScale = want;
  const L = topScale;
  const pad = 26;
  const sc = Math.min((w - 2 * pad) / (1.08 * L), (h - 2 * pad) / (2 * L));
  const ox = pad + 0.04 * L * sc, oy = h / 2;
  const P = (x, y) => [ox + x * sc, oy - y * sc];      // x: broadside to the right, y: along the array, up
  g.save();
  // rings and rays
  const ring = niceStep(L, 4);
  g.strokeStyle = "#e3e7ec"; g.lineWidth = 1; g.fillStyle = "#8a939d";
  for (let r = ring; r <= L + 1e-9; r += ring) {
    g.beginPath(); g.arc(ox, oy, r * sc, -Math.PI / 2, Math.PI / 2); g.stroke();
    g.textAlign = "center"; g.textBaseline = "top";
    g.fillText(`${+r.toPrecision(3)} m`, ox + r * sc * Math.cos(1.35), oy + r * sc * Math.sin(1.35) + 2);
  }
  for (let deg = -60; deg <= 60; deg += 30) {
    const a = deg / DEG;
    const [ex, ey] = P(L * Math.cos(a), L * Math.sin(a));
    g.beginPath(); g.moveTo(ox, oy); g.lineTo(ex, ey); g.stroke();
    g.textAlign = "left"; g.textBaseline = "middle";
    g.fillText(`${deg > 0 ? "+" : ""}${deg}°`, ex + 3, ey);
  }
  // Fresnel distance
  const zf = S.array.fresnel;
  if (zf < L) {
    g.strokeStyle = "#9467bd"; g.setLineDash([3, 4]);
    g.beginPath(); g.arc(ox, oy, zf * sc, -Math.PI / 2, Math.PI / 2); g.stroke(); g.setLineDash([]);
    g.fillStyle = "#9467bd"; g.textAlign = "left"; g.textBaseline = "bottom";   // at the top end of the arc
    g.fillText(`Fresnel distance ${zf.toFixed(2)} m`, ox + 4, oy - zf * sc - 2);
  }
  // the array, drawn to scale (at least 6 px long)
  const half = Math.max(S.array.aperture * sc / 2, 3);
  g.strokeStyle = "#1d232b"; g.lineWidth = 4; g.lineCap = "butt";
  g.beginPath(); g.moveTo(ox, oy - half); g.lineTo(ox, oy + half); g.stroke();
  // trails
  g.lineWidth = 1.2; g.strokeStyle = "rgba(0,0,0,0.28)";
  for (const tr of truthTrail) {
    if (tr.length < 2) continue;
    g.beginPath(); tr.forEach(([x, y], i) => { const [px, py] = P(x, y); i ? g.lineTo(px, py) : g.moveTo(px, py); }); g.stroke();
  }
  estTrail.forEach(([x, y, k], i) => {
    const [px, py] = P(x, y);
    g.globalAlpha = 0.12 + 0.5 * (i / Math.max(1, estTrail.length));
    g.fillStyle = colour(k); g.beginPath(); g.arc(px, py, 1.6, 0, 2 * Math.PI); g.fill();
  });
  g.globalAlpha = 1;
  // coarse, truth, estimates with 1-sigma and 2-sigma ellipses
  for (const t of coarse) {
    const [px, py] = P(...xy(t));
    g.fillStyle = "#9aa4ae"; g.beginPath(); g.moveTo(px, py - 5); g.lineTo(px + 5, py); g.lineTo(px, py + 5); g.lineTo(px - 5, py); g.fill();
  }
  for (const t of truth) {
    const [px, py] = P(...xy(t));
    g.strokeStyle = "#111"; g.lineWidth = 1.6; g.beginPath(); g.arc(px, py, 8, 0, 2 * Math.PI); g.stroke();
  }
  est.forEach((t, k) => {
    const [px, py] = P(...xy(t));
    if (t.theta_std !== undefined && t.range_std !== undefined) {
      for (const m of [1, 2]) {
        g.save(); g.translate(px, py); g.rotate(-t.theta);
        g.strokeStyle = colour(k); g.lineWidth = 1; g.setLineDash(m === 2 ? [4, 3] : []);
        g.beginPath(); g.ellipse(0, 0, Math.max(m * t.range_std * sc, 0.5), Math.max(m * t.range * t.theta_std * sc, 0.5), 0, 0, 2 * Math.PI);
        g.stroke(); g.restore();
      }
    }
    cross(g, px, py, 6, colour(k));
    g.fillStyle = colour(k); g.font = "600 11.5px system-ui, 'DejaVu Sans', sans-serif";
    g.textAlign = "left"; g.textBaseline = "bottom";
    g.fillText(`${(t.theta * DEG).toFixed(2)}°  ${t.range.toFixed(2)} m`, px + 10, py - 5);
  });
  // legend
  g.font = "11px system-ui, 'DejaVu Sans', sans-serif"; g.textBaseline = "middle"; g.textAlign = "left";
  const lx = w - 150; let ly = h - 76;
  const item = (draw, text) => { draw(lx + 7, ly); g.fillStyle = "#3b434c"; g.fillText(text, lx + 20, ly); ly += 16; };
  item((x, y) => cross(g, x, y, 4, "#333", 2), "estimate");
  item((x, y) => { g.strokeStyle = "#111"; g.lineWidth = 1.5; g.beginPath(); g.arc(x, y, 5, 0, 2 * Math.PI); g.stroke(); }, "true position");
  item((x, y) => { g.fillStyle = "#9aa4ae"; g.beginPath(); g.moveTo(x, y - 4); g.lineTo(x + 4, y); g.lineTo(x, y + 4); g.lineTo(x - 4, y); g.fill(); }, "coarse (Phase 1)");
  item((x, y) => { g.strokeStyle = "#1d232b"; g.lineWidth = 4; g.beginPath(); g.moveTo(x, y - 6); g.lineTo(x, y + 6); g.stroke(); }, `array ${S.array.aperture.toFixed(2)} m`);
  g.restore();
}

// ---- spectra -------------------------------------------------------------------------------
function drawAngle() {
  const [g, w, h] = prep("c-angle");
  if (!S) return note(g, w, h, "waiting for the first frame");
  if (!S.angle) return note(g, w, h, "no angle spectrum in the frames\n(music_localizer emit_spectra: true)");
  const th = S.angle.theta.map((v) => v * DEG), db = S.angle.db;
  let segs = segments(th);
  if (segs.length > 6) segs = [[0, th.length]];
  const L0 = 44, R = 8, T = 12, B = 36, gap = 10;
  const W = (w - L0 - R - gap * (segs.length - 1)) / segs.length;
  segs.forEach(([a, b], i) => {
    const lo = th[a], hi = th[b - 1] > lo ? th[b - 1] : lo + 1;
    const [X, Y] = axes(g, [L0 + i * (W + gap), T, W, h - T - B], {
      x: [lo, hi], y: [-42, 3], xt: 2, yt: 4, noYLabels: i > 0,
      ylabel: i === 0 ? "dB" : "", xlabel: i === Math.floor(segs.length / 2) ? "θ (degrees from broadside)" : "" });
    g.save(); g.beginPath(); g.rect(L0 + i * (W + gap), T, W, h - T - B); g.clip();
    g.strokeStyle = "#222"; g.lineWidth = 1.4; g.beginPath();
    for (const [ja, jb] of segments(th.slice(a, b)))
      for (let j = a + ja; j < a + jb; j++) (j === a + ja ? g.moveTo(X(th[j]), Y(db[j])) : g.lineTo(X(th[j]), Y(db[j])));
    g.stroke();
    (S.targets || []).forEach((t, k) => {
      const d = t.theta * DEG; if (d < lo || d > hi) return;
      g.strokeStyle = colour(k); g.setLineDash([5, 3]); g.lineWidth = 1.5;
      g.beginPath(); g.moveTo(X(d), T); g.lineTo(X(d), h - B); g.stroke(); g.setLineDash([]);
    });
    for (const t of S.truth || []) { const d = t.theta * DEG; if (d >= lo && d <= hi) tri(g, X(d), T + 6, 5, "#111"); }
    g.restore();
  });
}

function drawRange() {
  const [g, w, h] = prep("c-range");
  if (!S) return note(g, w, h, "waiting for the first frame");
  if (!S.range) return note(g, w, h, "no range spectra in the frames\n(music_localizer emit_spectra: true)");
  let lo = Infinity, hi = 0;
  for (const row of S.range) for (const r of row.r) if (r > 0) { lo = Math.min(lo, r); hi = Math.max(hi, r); }
  if (!(hi > lo)) return note(g, w, h, "empty range grid");
  const [X, Y] = axes(g, [44, 12, w - 52, h - 48], { x: [lo, hi], y: [-42, 3], logx: true, yt: 4,
    xlabel: "range r (m)", ylabel: "dB" });
  const est = S.targets || [];
  const used = new Set();
  g.save(); g.beginPath(); g.rect(44, 12, w - 52, h - 48); g.clip();
  S.range.forEach((row) => {
    let pk = 0; row.db.forEach((v, i) => { if (v > row.db[pk]) pk = i; });
    let k = -1, best = Infinity;               // the estimate nearest this row's peak (log range)
    est.forEach((t, j) => { const c = Math.abs(Math.log(t.range / row.r[pk])); if (!used.has(j) && c < best) { best = c; k = j; } });
    if (k >= 0) used.add(k);
    const c = k >= 0 ? colour(k) : "#888";
    g.strokeStyle = c; g.lineWidth = 1.4; g.beginPath();
    row.r.forEach((r, i) => (i ? g.lineTo(X(r), Y(row.db[i])) : g.moveTo(X(r), Y(row.db[i]))));
    g.stroke();
    if (k >= 0) {
      const t = est[k];
      g.setLineDash([5, 3]); g.beginPath(); g.moveTo(X(t.range), 12); g.lineTo(X(t.range), h - 36); g.stroke(); g.setLineDash([]);
      if (t.err_range !== undefined) tri(g, X(t.range - t.err_range), 18, 5, c, "#111");
    }
  });
  g.restore();
}

// ---- estimate minus truth, per target --------------------------------------------------------
function drawZoom() {
  const [g, w, h] = prep("c-zoom");
  if (!S) return note(g, w, h, "waiting for the first frame");
  const est = S.targets || [];
  const hasErr = est.some((t) => t.err_range !== undefined);
  const hasStd = est.some((t) => t.theta_std !== undefined);
  if (!est.length) return note(g, w, h, "no estimates in this frame");
  if (!hasErr && !hasStd) return note(g, w, h, "no truth and no uncertainty in the frames\n(theta_std / range_std)");
  const K = Math.min(est.length, 4), gap = 24, L0 = 10, B = 34, T = 16;
  const side = Math.min((w - L0 - gap * (K - 1) - 4) / K, h - T - B);
  for (let k = 0; k < K; k++) {
    const t = est[k], pts = errTrail[k] || [];
    let ext = 0;
    for (const [a, b] of pts) ext = Math.max(ext, Math.abs(a), Math.abs(b));
    if (t.range_std !== undefined) ext = Math.max(ext, 2.2 * t.range_std, 2.2 * t.range * t.theta_std);
    ext = niceStep(1.15 * (ext || 1e-3), 1);
    const unit = ext < 0.01 ? [1e3, "mm"] : ext < 1 ? [1e2, "cm"] : [1, "m"];
    const L = L0 + k * (side + gap);
    const [X, Y] = axes(g, [L, T, side, side], { x: [-ext * unit[0], ext * unit[0]], y: [-ext * unit[0], ext * unit[0]],
      xt: 2, yt: 2, noYLabels: true, xlabel: `cross-range (${unit[1]})` });
    g.save(); g.beginPath(); g.rect(L, T, side, side); g.clip();
    const u = unit[0];
    if (t.range_std !== undefined && t.theta_std !== undefined) {
      for (const m of [1, 2]) {
        g.strokeStyle = colour(k); g.lineWidth = 1.2; g.setLineDash(m === 2 ? [4, 3] : []);
        g.beginPath(); g.ellipse(X(0), Y(0), Math.abs(X(m * t.range * t.theta_std * u) - X(0)),
          Math.abs(Y(m * t.range_std * u) - Y(0)), 0, 0, 2 * Math.PI); g.stroke();
      }
      g.setLineDash([]);
    }
    pts.forEach(([a, b], i) => {
      g.globalAlpha = 0.15 + 0.6 * (i / Math.max(1, pts.length)); g.fillStyle = colour(k);
      g.beginPath(); g.arc(X(a * u), Y(b * u), 2, 0, 2 * Math.PI); g.fill();
    });
    g.globalAlpha = 1;
    if (t.err_range !== undefined) cross(g, X(t.range * t.err_theta * u), Y(t.err_range * u), 5, colour(k), 2);
    g.strokeStyle = "#111"; g.lineWidth = 1.2; g.beginPath(); g.arc(X(0), Y(0), 4, 0, 2 * Math.PI); g.stroke();
    g.restore();
    g.fillStyle = colour(k); g.font = "600 11px system-ui, 'DejaVu Sans', sans-serif"; g.textAlign = "left"; g.textBaseline = "bottom";
    g.fillText(`#${k + 1}  range ↑ (${unit[1]})`, L + 2, T - 2);
  }
  if (!hasStd) { g.fillStyle = "#8a939d"; g.font = "italic 11px system-ui"; g.textAlign = "right"; g.textBaseline = "bottom"; g.fillText("no theta_std/range_std: no ellipses", w - 4, h - 1); }
}

// ---- history -------------------------------------------------------------------------------
function drawHistory() {
  const [g, w, h] = prep("c-hist");
  if (!S) return note(g, w, h, "waiting for the first frame");
  const H = S.history, n = H.seq.length;
  if (n < 2) return note(g, w, h, "collecting history…");
  const x = [H.seq[0], H.seq[n - 1] > H.seq[0] ? H.seq[n - 1] : H.seq[0] + 1];
  const half = (h - 44) / 2;
  const series = [
    { key: "pos_err", label: "worst position error", log: true, c: "#1f77b4" },
    { key: "hi_nmse_db", label: "HI NMSE (dB)", log: false, c: "#d62728" }];
  series.forEach((s, i) => {
    const vals = H[s.key].map((v) => (v === null ? null : s.log ? Math.log10(Math.max(v, 1e-6)) : v));
    const ok = vals.filter((v) => v !== null);
    const T = 8 + i * (half + 8), box = [54, T, w - 62, half - 8];
    if (!ok.length) {
      g.fillStyle = "#8a939d"; g.font = "italic 11px system-ui"; g.textAlign = "center"; g.textBaseline = "middle";
      g.fillText(`${s.label}: needs the truth${s.key === "hi_nmse_db" ? " and c_hat" : ""}`, w / 2, T + half / 2); return;
    }
    let lo = Math.min(...ok), hi = Math.max(...ok);
    if (s.log) { lo = Math.floor(lo); hi = Math.max(Math.ceil(hi), lo + 1); } else { const p = Math.max(1, 0.1 * (hi - lo)); lo -= p; hi += p; }
    const [X, Y] = axes(g, box, { x, y: [lo, hi], xt: 4, yt: s.log ? Math.min(4, hi - lo) : 3, noYLabels: s.log,
      xlabel: i === 1 ? "frame seq" : "" });
    if (s.log) {
      g.fillStyle = "#5d6671"; g.textAlign = "right"; g.textBaseline = "middle";
      for (let e = lo; e <= hi; e++) g.fillText(tickLen(Math.pow(10, e)), 50, Y(e));
    }
    g.strokeStyle = s.c; g.lineWidth = 1.3; g.beginPath(); let on = false;
    vals.forEach((v, j) => { if (v === null) { on = false; return; } on ? g.lineTo(X(H.seq[j]), Y(v)) : g.moveTo(X(H.seq[j]), Y(v)); on = true; });
    g.stroke();
    g.fillStyle = s.c; g.font = "600 11px system-ui, 'DejaVu Sans', sans-serif"; g.textAlign = "right"; g.textBaseline = "top";
    g.fillText(s.label, w - 12, T + 3);
  });
}

// ---- fault map -----------------------------------------------------------------------------
let faultKey = "";
function drawFaults() {
  // The fault map changes rarely (static impairments): skip the redraw when nothing changed.
  const c = $("c-fault");
  const key = S ? [c.clientWidth, c.clientHeight, S.faulty, S.true_faulty, S.hi_dev].join("|") : "";
  if (S && key === faultKey) return;
  faultKey = key;
  const [g, w, h] = prep("c-fault");
  if (!S) return note(g, w, h, "waiting for the first frame");
  const n = S.array.n_antennas;
  const det = new Set(S.faulty || []), tru = new Set(S.true_faulty || []);
  const hasT = S.true_faulty !== null, hasD = S.faulty !== null;
  if (!S.hi_dev && !hasT && !hasD) return note(g, w, h, "no fault information in the frames");
  const [X, Y] = axes(g, [44, 16, w - 250, h - 46], { x: [-0.5, n - 0.5], y: [0, 2.05], xt: 12, yt: 2,
    xlabel: "antenna index n (0-based)", ylabel: "|ĉ−1|" });
  const bw = Math.max(1, (X(1) - X(0)) * 0.8);
  const kind = (i) => (det.has(i) ? (!hasT || tru.has(i) ? "hit" : "fa") : tru.has(i) ? "miss" : "idle");
  if (S.hi_dev) S.hi_dev.forEach((v, i) => {
    g.fillStyle = FAULT[kind(i)];
    const top = Y(Math.min(v, 2.05)); g.fillRect(X(i) - bw / 2, top, bw, Math.max(Y(0) - top, 0.5));
  });
  for (let i = 0; i < n; i++) {
    const k = kind(i);
    if (k === "idle") continue;
    if (det.has(i)) tri(g, X(i), 10, 4.5, FAULT[k]);
    else { g.strokeStyle = FAULT.miss; g.lineWidth = 1.5; g.beginPath(); g.arc(X(i), 10, 3.5, 0, 2 * Math.PI); g.stroke(); }
  }
  const count = { hit: 0, miss: 0, fa: 0 };
  for (let i = 0; i < n; i++) { const k = kind(i); if (k !== "idle") count[k]++; }
  const names = hasT ? [["hit", "detected, truly faulty"], ["fa", "false alarm"], ["miss", "missed"]] : [["hit", "detected"]];
  g.font = "11.5px system-ui, 'DejaVu Sans', sans-serif"; g.textAlign = "left"; g.textBaseline = "middle";
  names.forEach(([k, label], j) => {
    const y = 22 + j * 18;
    g.fillStyle = FAULT[k]; g.fillRect(w - 196, y - 5, 11, 11);
    g.fillStyle = "#3b434c"; g.fillText(`${label} (${count[k]})`, w - 180, y);
  });
  if (!S.hi_dev) { g.fillStyle = "#8a939d"; g.fillText("no c_hat in the frames", w - 196, 22 + names.length * 18); }
}

// ---- tables --------------------------------------------------------------------------------
function statusClass(s) { return s === "ok" ? "st-ok" : "st-warn"; }
function tables() {
  const est = S.targets || [];
  const anyStd = est.some((t) => t.theta_std !== undefined), anyStatus = est.some((t) => t.status !== undefined);
  const anyErr = est.some((t) => t.err_range !== undefined);
  let html = "<tr><th>#</th><th>θ (°)</th><th>r (m)</th>" + (anyStd ? "<th>σθ (m°)</th><th>σr</th>" : "") +
    (anyErr ? "<th>Δθ (m°)</th><th>Δr</th><th>Δ cross-range</th>" : "") + (anyStatus ? "<th>status</th>" : "") + "</tr>";
  est.forEach((t, k) => {
    html += `<tr><td><span class="sw" data-k="${k}"></span>${k + 1}</td><td>${fmt(t.theta * DEG, 3)}</td><td>${fmt(t.range, 3)}</td>`;
    if (anyStd) html += `<td>${t.theta_std !== undefined ? fmt(t.theta_std * DEG * 1e3, 2) : "–"}</td><td>${fmtLen(t.range_std)}</td>`;
    if (anyErr) html += `<td>${t.err_theta !== undefined ? fmt(t.err_theta * DEG * 1e3, 2) : "–"}</td><td>${fmtLen(t.err_range)}</td>` +
      `<td>${t.err_theta !== undefined ? fmtLen(t.range * t.err_theta) : "–"}</td>`;
    if (anyStatus) html += `<td class="${statusClass(t.status)}">${t.status !== undefined ? esc(t.status) : "–"}</td>`;
    html += "</tr>";
  });
  if (!est.length) html += '<tr><td class="note" colspan="5">no estimates in this frame</td></tr>';
  if (!anyStd) html += '<tr><td class="note" colspan="7">frames carry no theta_std / range_std (uncertainty) yet</td></tr>';
  $("t-targets").innerHTML = html;
  document.querySelectorAll("#t-targets .sw").forEach((el) => { el.style.background = colour(+el.dataset.k); });

  const c = S.counters || {};
  const clients = c.clients || [];
  const sent = clients.reduce((a, x) => a + x.sent, 0), skipped = clients.reduce((a, x) => a + x.skipped, 0);
  let rows = [["frames received", c.frames], ["rate", `${fmt(c.rate_hz, 1)} frames/s`],
    ["latency now / p95", `${fmt(c.latency_ms, 1)} / ${fmt(c.latency_p95_ms, 1)} ms`],
    ["frames missing (seq gaps)", c.missing], ["frames refused (bad)", c.bad],
    ["browsers", `${clients.length} (updates sent ${sent}, skipped ${skipped})`]];
  if (S.noise_var !== null && S.noise_var !== undefined) rows.push(["noise variance σ²", Number(S.noise_var).toPrecision(3)]);
  let t = rows.map(([k, v]) => `<tr><td class="k">${k}</td><td>${esc(v === undefined || v === null ? "–" : v)}</td></tr>`).join("");
  if (S.blocks && typeof S.blocks === "object") {
    for (const [name, st] of Object.entries(S.blocks)) {
      const parts = st && typeof st === "object" ? Object.entries(st).map(([k, v]) => `${k} ${typeof v === "number" ? +v.toPrecision(3) : v}`).join(", ") : String(st);
      t += `<tr><td class="k">${esc(name)}</td><td>${esc(parts)}</td></tr>`;
    }
  }
  $("t-counters").innerHTML = t;
}

function header() {
  $("seq").textContent = S.seq;
  $("t0").textContent = `${S.t0.toFixed(3)} s`;
  $("rate").textContent = S.counters && S.counters.rate_hz ? `${S.counters.rate_hz.toFixed(1)} /s` : "–";
  $("lat").textContent = S.counters && S.counters.latency_ms !== null ? `${S.counters.latency_ms.toFixed(1)} ms` : "–";
  $("arr").textContent = `N = ${S.array.n_antennas}, ${(S.array.carrier_hz / 1e9).toPrecision(3)} GHz, ${S.array.aperture.toFixed(2)} m`;
}

function setStatus(cls, text) { const el = $("status"); el.className = `pill ${cls}`; el.textContent = text; }

function draw() {
  pending = false;
  for (const f of [drawTop, drawAngle, drawRange, drawZoom, drawHistory, drawFaults]) {
    try { f(); } catch (e) { console.error(f.name, e); }
  }
  if (S) { header(); tables(); }
  document.body.dataset.drawn = String(received);
}
function schedule() { if (!pending) { pending = true; requestAnimationFrame(draw); } }

function onState(st) {
  S = st; received += 1; lastArrival = Date.now();
  document.body.dataset.frames = String(received);
  (st.truth || []).forEach((t, i) => { (truthTrail[i] = truthTrail[i] || []).push(xy(t)); if (truthTrail[i].length > TRAIL) truthTrail[i].shift(); });
  (st.targets || []).forEach((t, k) => {
    estTrail.push([...xy(t), k]);
    if (t.err_range !== undefined) { (errTrail[k] = errTrail[k] || []).push([t.range * t.err_theta, t.err_range]); if (errTrail[k].length > TRAIL) errTrail[k].shift(); }
  });
  while (estTrail.length > TRAIL * Math.max(1, (st.targets || []).length)) estTrail.shift();
  setStatus("live", "live");
  schedule();
}

// ?frames=N: stop listening after N updates (a still picture; headless screenshots need a page whose
// network goes quiet).
const STOP_AFTER = +(new URLSearchParams(location.search).get("frames") || 0);

function connect() {
  const es = new EventSource("events");
  es.addEventListener("frame", (ev) => {
    try { onState(JSON.parse(ev.data)); } catch (e) { console.error(e); }
    if (STOP_AFTER > 0 && received >= STOP_AFTER) { es.close(); ended = true; setStatus("ended", `paused after ${received} updates`); }
  });
  es.addEventListener("end", () => { ended = true; setStatus("ended", "stream ended"); });
  es.onerror = () => { if (!ended) setStatus("down", "disconnected, retrying"); };
  // EventSource reconnects by itself (the server sends retry: 1000 ms).
}

setInterval(() => { if (S && !ended && Date.now() - lastArrival > 3000 && $("status").classList.contains("live")) setStatus("wait", "no new frame"); }, 1000);
window.addEventListener("resize", schedule);
connect();
schedule();
