//! A collapse run as ONE self-contained offline page — seed 003's picture. Each pass is a row:
//! the entropy of the last committed tokens (the past), then of every window position (the
//! speculated future), committed positions outlined, the rest faded back into superposition;
//! a chart of entropy by distance from the frontier (the "hockey stick": low over the past,
//! ramping up over the future); and the text with each pass's tokens grouped. The run's JSON is
//! embedded and drawn by a small inline script: no CDN, no network, no external file.

use super::explore::{escape, STYLE};
use everett_engine::oneshot::Collapsed;
use everett_engine::tokenizer::Tokenizer;

/// The page for `run` of `prompt`.
pub fn page(run: &Collapsed, tok: &Tokenizer, prompt: &str) -> String {
    let mut data = run.to_json(tok);
    data["prompt"] = prompt.into();
    // `</` inside a script element would end it early; JSON allows `<\/` for the same text.
    let json = data.to_string().replace("</", "<\\/");
    let title = escape(prompt);
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n\
         <title>everett collapse: {title}</title>\n<style>{STYLE}{EXTRA_STYLE}</style></head>\n\
         <body>\n<h1>everett collapse</h1>\n<div id=\"status\">loading</div>\n\
         <section id=\"summary\"></section>\n\
         <h2>Entropy by distance from the frontier</h2>\n<div id=\"stick\"></div>\n\
         <h2>Passes <small>(past | window; outlined = collapsed into the past)</small></h2>\n\
         <div id=\"passes\"></div>\n<h2>Text <small>(one shade per pass)</small></h2>\n\
         <div id=\"text\"></div>\n\
         <script type=\"application/json\" id=\"data\">{json}</script>\n\
         <script>{SCRIPT}</script>\n</body></html>\n"
    )
}

const EXTRA_STYLE: &str = r##"
.pass{display:flex;align-items:center;gap:2px;margin:1px 0;font-size:.75em}
.pass .n{width:4.5em;color:#666;text-align:right;margin-right:.4em}
.cell{width:1.6em;height:1.2em;border:1px solid transparent;border-radius:2px}
.cell.past{opacity:.55}
.cell.pad{visibility:hidden}
.cell.kept{border-color:#1a7f37}
.cell.lost{opacity:.3;border-style:dashed;border-color:#999}
.front{width:2px;height:1.3em;background:#333;margin:0 3px}
#text{font-family:ui-monospace,monospace;white-space:pre-wrap;line-height:1.6}
#text span.p0{background:#e8f0fe} #text span.p1{background:#fdf2d0}
#text span.multi{border-bottom:2px solid #1a7f37}
"##;

const SCRIPT: &str = r##"
(function(){
try {
const d = JSON.parse(document.getElementById('data').textContent);
const PAST = 8;
const color = h => { const t = Math.min(1, h / 5); return `rgb(255,${Math.round(255 - 200 * t)},${Math.round(255 - 230 * t)})`; };
const el = (tag, cls, text) => { const e = document.createElement(tag); if (cls) e.className = cls; if (text !== undefined) e.textContent = text; return e; };
const n = d.tokens.length;
document.getElementById('summary').textContent =
  `${n} tokens in ${d.forward_passes} forward passes: ${d.tokens_per_pass.toFixed(2)} tokens per pass ` +
  `(${d.params.mode}, window ${d.params.window}, n-gram ${d.params.ngram}, candidates ${d.params.candidates}; ${Math.round(d.wall_ms)} ms)`;
// Per pass: the entropies of the past (committed tokens before it) and of its window.
let done = 0, sums = {}, counts = {};
const passes = document.getElementById('passes');
d.passes.forEach((p, i) => {
  const row = el('div', 'pass');
  row.appendChild(el('span', 'n', `${i + 1}: +${p.accepted}`));
  const past = d.tokens.slice(Math.max(0, done - PAST), done).map(t => t.entropy);
  // Blank cells keep every row's frontier in one column.
  for (let j = past.length; j < PAST; j++) row.appendChild(el('span', 'cell pad'));
  past.forEach((h, j) => {
    const c = el('span', 'cell past'); c.style.background = color(h); c.title = `past, entropy ${h.toFixed(2)}`; row.appendChild(c);
    const x = j - past.length; sums[x] = (sums[x] || 0) + h; counts[x] = (counts[x] || 0) + 1;
  });
  row.appendChild(el('span', 'front'));
  p.entropies.forEach((h, j) => {
    const c = el('span', 'cell ' + (j < p.accepted ? 'kept' : 'lost')); c.style.background = color(h);
    c.title = `window position ${j}, entropy ${h.toFixed(2)}` + (j < p.accepted ? ', collapsed' : '');
    row.appendChild(c); sums[j] = (sums[j] || 0) + h; counts[j] = (counts[j] || 0) + 1;
  });
  passes.appendChild(row);
  done += p.accepted;
});
// The hockey stick: mean entropy by position relative to the frontier, drawn as SVG markup.
const xs = Object.keys(sums).map(Number).sort((a, b) => a - b);
const mean = x => sums[x] / counts[x];
const W = 640, H = 180, pad = 30;
const maxH = Math.max(1, ...xs.map(mean));
const px = x => pad + (x - xs[0]) / Math.max(1, xs[xs.length - 1] - xs[0]) * (W - 2 * pad);
const py = h => H - pad - h / maxH * (H - 2 * pad);
let svg = `<svg width="${W}" height="${H}" role="img">`;
svg += `<polyline fill="none" stroke="#c0392b" stroke-width="2" points="${xs.map(x => px(x) + ',' + py(mean(x))).join(' ')}"/>`;
svg += `<line x1="${px(-0.5)}" x2="${px(-0.5)}" y1="${pad / 2}" y2="${H - pad}" stroke="#333" stroke-dasharray="4 3"/>`;
svg += `<text x="${px(-0.5) + 4}" y="${pad / 2 + 10}" font-size="11">past | future</text>`;
xs.forEach(x => {
  svg += `<text x="${px(x) - 4}" y="${H - pad + 14}" font-size="10">${x}</text>`;
  svg += `<circle class="pt" cx="${px(x)}" cy="${py(mean(x))}" r="3" fill="#c0392b"><title>${x < 0 ? 'past' : 'window'} ${x}: mean entropy ${mean(x).toFixed(2)} nats</title></circle>`;
});
document.getElementById('stick').innerHTML = svg + '</svg>';
// The text, grouped by the pass that committed it.
const text = document.getElementById('text');
text.appendChild(el('span', '', d.prompt));
let t = 0;
d.passes.forEach((p, i) => {
  const s = el('span', 'p' + (i % 2) + (p.accepted > 1 ? ' multi' : ''));
  s.textContent = d.tokens.slice(t, t + p.accepted).map(x => x.text).join('');
  s.title = `pass ${i + 1}: ${p.accepted} token(s), ${p.source}`;
  text.appendChild(s); t += p.accepted;
});
const status = document.getElementById('status');
status.textContent = `${d.passes.length} passes drawn`;
status.dataset.state = 'ok';
status.dataset.passes = d.passes.length;
} catch (e) {
  const status = document.getElementById('status');
  status.textContent = 'error: ' + e; status.dataset.state = 'error';
}
})();
"##;
