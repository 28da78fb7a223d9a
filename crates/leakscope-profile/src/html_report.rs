//! The self-check as one self-contained HTML page: verdict, findings with
//! their evidence and fix, a chart of live memory, what grows, the top
//! holders, and an interactive flame graph of where live memory was
//! allocated. No external resources: the page works offline and can be
//! attached to a ticket.

use std::fmt::Write;

use crate::diagnose::{SelfCheck, Verdict};
use crate::flame::flame_graph_svg;
use crate::snapshot::SnapshotReport;
use crate::trend::TrendReport;
use crate::units::format_value;
use crate::StackView;

/// Escapes text for HTML content and attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn bytes(v: f64) -> String {
    format_value(v.round() as i64, "bytes")
}

const STYLE: &str = "
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1250px; color: #222; }
h1 { margin-bottom: 0.2em; }
.verdict { font-size: 1.15em; padding: 0.6em 0.9em; border-radius: 6px; }
.verdict.leak { background: #fde2e1; border-left: 6px solid #c62828; }
.verdict.no_leak { background: #e3f4e4; border-left: 6px solid #2e7d32; }
.verdict.inconclusive { background: #f1f1f1; border-left: 6px solid #888; }
.finding { border: 1px solid #ddd; border-radius: 6px; padding: 0.4em 1em 0.8em; margin: 1em 0; }
.finding h3 { margin: 0.5em 0; }
.scenario { font-family: monospace; background: #eef; padding: 0.1em 0.4em; border-radius: 4px; }
.confidence { color: #555; font-weight: normal; }
.fix { background: #fff8e1; padding: 0.5em; border-radius: 4px; }
ol.chain, ol.stack { font-family: monospace; font-size: 0.9em; }
table { border-collapse: collapse; font-size: 0.9em; }
td, th { padding: 0.2em 0.6em; text-align: left; border-bottom: 1px solid #eee; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.name { font-family: monospace; }
iframe { width: 100%; height: 640px; border: 1px solid #ddd; }
";

/// Counts the flame graph's frames once it has loaded, so the page (and a
/// test reading the DOM) can tell that it rendered.
const SCRIPT: &str = "
function flameLoaded(frame) {
  var status = document.getElementById('flame-status');
  try {
    var n = frame.contentDocument.querySelectorAll('#frames > g').length;
    status.textContent = 'flame graph: ' + n + ' frames (click to zoom, Ctrl-F to search)';
    status.setAttribute('data-frames', String(n));
  } catch (e) {
    status.textContent = 'flame graph: open this page from a file to interact with it';
  }
}
";

/// Inputs of the page.
pub struct ReportInput<'a> {
    pub title: &'a str,
    pub check: &'a SelfCheck,
    pub trend: &'a TrendReport,
    pub snapshots: &'a [SnapshotReport],
    pub profiles: &'a [StackView],
    /// The memory breakdowns beside the profiles, in time order.
    pub memory: &'a [crate::memory::Breakdown],
}

pub fn render(input: &ReportInput<'_>) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{}</title><style>{STYLE}</style><script>{SCRIPT}</script></head><body>\n",
        esc(input.title)
    );
    let _ = writeln!(out, "<h1>{}</h1>", esc(input.title));
    let class = match input.check.verdict {
        Verdict::Leak => "leak",
        Verdict::NoLeak => "no_leak",
        Verdict::Inconclusive => "inconclusive",
    };
    let _ = writeln!(
        out,
        "<p class=\"verdict {class}\" id=\"verdict\">{}</p>",
        esc(&input.check.summary)
    );
    findings(&mut out, input.check);
    live_chart(&mut out, input);
    memory_chart(&mut out, input.memory);
    growing(&mut out, input.trend);
    holders(&mut out, input.snapshots);
    pinned(&mut out, input.snapshots);
    flame(&mut out, input.profiles);
    out.push_str("</body></html>\n");
    out
}

fn findings(out: &mut String, check: &SelfCheck) {
    let _ = writeln!(out, "<section id=\"findings\"><h2>Findings</h2>");
    if check.findings.is_empty() {
        let _ = writeln!(out, "<p>No leak pattern found.</p>");
    }
    for (i, f) in check.findings.iter().enumerate() {
        let _ = writeln!(
            out,
            "<article class=\"finding\" data-scenario=\"{}\"><h3>{}. <span class=\"scenario\">{}</span> {} \
             <span class=\"confidence\">(confidence {:.0}%)</span></h3>",
            esc(&f.scenario),
            i + 1,
            esc(&f.scenario),
            esc(&f.title),
            f.confidence * 100.0
        );
        let _ = writeln!(out, "<ul>");
        for e in &f.evidence {
            let _ = writeln!(out, "<li>{}</li>", esc(e));
        }
        let _ = writeln!(out, "</ul>");
        if !f.chain.is_empty() {
            let _ = writeln!(out, "<p>Held along (root first):</p><ol class=\"chain\">");
            for l in &f.chain {
                let _ = writeln!(out, "<li>{}</li>", esc(l));
            }
            let _ = writeln!(out, "</ol>");
        }
        if !f.stack.is_empty() {
            let _ = writeln!(out, "<p>Allocated at (leaf first):</p><ol class=\"stack\">");
            for l in f.stack.iter().take(12) {
                let _ = writeln!(out, "<li>{}</li>", esc(l));
            }
            let _ = writeln!(out, "</ol>");
        }
        if !f.dependencies.is_empty() {
            let names: Vec<String> = f.dependencies.iter().map(|d| d.to_string()).collect();
            let _ = writeln!(
                out,
                "<p class=\"dependencies\">Dependencies on its stack and chain: {}</p>",
                esc(&names.join(", "))
            );
        }
        let _ = writeln!(
            out,
            "<p class=\"fix\"><b>Fix:</b> {}</p></article>",
            esc(&f.fix)
        );
    }
    let _ = writeln!(out, "</section>");
}

/// Live bytes over time, as an SVG polyline (snapshots if there are any,
/// else the profiles' inuse_space).
fn live_chart(out: &mut String, input: &ReportInput<'_>) {
    let points: Vec<(f64, f64)> = if input.snapshots.len() >= 2 {
        let t0 = input.snapshots[0].time_unix_ms as f64 / 1e3;
        input
            .snapshots
            .iter()
            .map(|s| (s.time_unix_ms as f64 / 1e3 - t0, s.totals.live.bytes as f64))
            .collect()
    } else {
        let t0 = input.profiles.first().map_or(0, |p| p.time_nanos) as f64 / 1e9;
        input
            .profiles
            .iter()
            .filter_map(|p| {
                let i = p.sample_index(Some("inuse_space")).ok()?;
                Some((p.time_nanos as f64 / 1e9 - t0, p.total(i) as f64))
            })
            .collect()
    };
    if points.len() < 2 {
        return;
    }
    let (w, h, pad) = (900.0, 220.0, 40.0);
    let max_t = points.iter().map(|p| p.0).fold(0.0f64, f64::max).max(1e-9);
    let max_b = points.iter().map(|p| p.1).fold(0.0f64, f64::max).max(1.0);
    let xy = |(t, b): (f64, f64)| {
        (
            pad + t / max_t * (w - 2.0 * pad),
            h - pad - b / max_b * (h - 2.0 * pad),
        )
    };
    let line: Vec<String> = points
        .iter()
        .map(|&p| {
            let (x, y) = xy(p);
            format!("{x:.1},{y:.1}")
        })
        .collect();
    let _ = writeln!(
        out,
        "<section id=\"live\"><h2>Live memory</h2>\
         <svg width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"live memory over time\">\
         <line x1=\"{pad}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y0}\" stroke=\"#999\"/>\
         <line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{y0}\" stroke=\"#999\"/>\
         <polyline fill=\"none\" stroke=\"#c62828\" stroke-width=\"2\" points=\"{}\"/>\
         <text x=\"{pad}\" y=\"{ty}\" font-size=\"12\">{}</text>\
         <text x=\"{x1}\" y=\"{tx}\" font-size=\"12\" text-anchor=\"end\">{:.1} s</text>\
         </svg></section>",
        line.join(" "),
        esc(&bytes(max_b)),
        max_t,
        y0 = h - pad,
        x1 = w - pad,
        ty = pad - 8.0,
        tx = h - pad + 16.0,
    );
}

/// RSS, the heap's blocks in use and the memory the allocator keeps after
/// frees over time (from the run's memory breakdowns): RSS that climbs
/// while the heap in use stays flat is not a leak.
fn memory_chart(out: &mut String, memory: &[crate::memory::Breakdown]) {
    use crate::memory::PartKind;
    if memory.len() < 2 {
        return;
    }
    let (w, h, pad) = (900.0, 240.0, 40.0);
    let t0 = memory[0].time_unix_ms;
    let max_t = (memory[memory.len() - 1].time_unix_ms.saturating_sub(t0) as f64 / 1e3).max(1e-9);
    let max_b = memory.iter().map(|m| m.rss).max().unwrap_or(1).max(1) as f64;
    let line = |value: &dyn Fn(&crate::memory::Breakdown) -> u64| -> String {
        memory
            .iter()
            .map(|m| {
                let t = m.time_unix_ms.saturating_sub(t0) as f64 / 1e3;
                let x = pad + t / max_t * (w - 2.0 * pad);
                let y = h - pad - value(m) as f64 / max_b * (h - 2.0 * pad);
                format!("{x:.1},{y:.1}")
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let series: [(&str, &str, String); 3] = [
        ("RSS", "#1565c0", line(&|m| m.rss)),
        (
            "heap: blocks in use",
            "#c62828",
            line(&|m| m.part(PartKind::HeapInUse)),
        ),
        (
            "heap: freed, kept by the allocator",
            "#ef6c00",
            line(&|m| m.part(PartKind::HeapFree)),
        ),
    ];
    let _ = write!(
        out,
        "<section id=\"memory\"><h2>Where RSS goes</h2>\
         <svg width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"RSS, heap in use and freed memory over time\">\
         <line x1=\"{pad}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y0}\" stroke=\"#999\"/>\
         <line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{y0}\" stroke=\"#999\"/>",
        y0 = h - pad,
        x1 = w - pad,
    );
    for (i, (name, color, points)) in series.iter().enumerate() {
        let _ = write!(
            out,
            "<polyline class=\"memory-series\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{points}\"/>\
             <text x=\"{}\" y=\"{}\" font-size=\"12\" fill=\"{color}\">{}</text>",
            pad + 10.0 + 260.0 * i as f64,
            pad - 8.0,
            esc(name)
        );
    }
    let _ = writeln!(
        out,
        "<text x=\"{pad}\" y=\"{}\" font-size=\"12\">0 .. {}</text>\
         <text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"end\">{:.1} s</text></svg></section>",
        h - 8.0,
        esc(&bytes(max_b)),
        w - pad,
        h - pad + 16.0,
        max_t
    );
}

fn growing(out: &mut String, trend: &TrendReport) {
    let rows: Vec<_> = trend.growing().take(10).collect();
    let _ = writeln!(out, "<section id=\"trend\"><h2>What grows</h2>");
    let _ = writeln!(
        out,
        "<p>All live memory: {}, {} → {} ({}/s) over {:.1} s after {} warm-up points.</p>",
        trend.total.state.name(),
        bytes(trend.total.first_bytes),
        bytes(trend.total.last_bytes),
        bytes(trend.total.bytes_per_second),
        trend.seconds,
        trend.warmup
    );
    if rows.is_empty() {
        let _ = writeln!(out, "<p>No stack or holder grew.</p></section>");
        return;
    }
    let _ = writeln!(
        out,
        "<table><tr><th>kind</th><th>first</th><th>last</th><th>per second</th>\
         <th>per request</th><th>name</th></tr>"
    );
    for s in rows {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"name\">{}</td></tr>",
            s.kind.name(),
            bytes(s.first_bytes),
            bytes(s.last_bytes),
            bytes(s.bytes_per_second),
            s.bytes_per_unit.map_or(String::new(), bytes),
            esc(&s.name)
        );
    }
    let _ = writeln!(out, "</table></section>");
}

fn holders(out: &mut String, snapshots: &[SnapshotReport]) {
    let Some(last) = snapshots.iter().max_by_key(|s| s.totals.live.bytes) else {
        return;
    };
    let _ = writeln!(
        out,
        "<section id=\"holders\"><h2>Who holds memory (snapshot with the most live memory)</h2>\
         <table><tr><th>retained</th><th>blocks</th><th>holder</th><th>chain (root first)</th></tr>"
    );
    // Holders of a few bytes (a static string, a thread's name) are noise.
    let floor = last.totals.live.bytes / 1000;
    for h in last
        .holders
        .iter()
        .filter(|h| h.retained.bytes >= floor)
        .take(15)
    {
        let chain: Vec<String> = h.chain.iter().map(|l| l.node.label()).collect();
        let _ = writeln!(
            out,
            "<tr><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"name\">{}</td>\
             <td class=\"name\">{}</td></tr>",
            bytes(h.retained.bytes as f64),
            h.retained.blocks,
            esc(&h.node.label()),
            esc(&chain.join(" → "))
        );
    }
    let _ = writeln!(out, "</table></section>");
}

/// Buffers pinned by small slices in the snapshot with the most live
/// memory, with the field of each buffer its slice is.
fn pinned(out: &mut String, snapshots: &[SnapshotReport]) {
    let Some(last) = snapshots.iter().max_by_key(|s| s.totals.live.bytes) else {
        return;
    };
    if last.pinned.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "<section id=\"pinned\"><h2>Buffers pinned by small slices</h2>\
         <table><tr><th>buffers</th><th>bytes</th><th>slices</th><th>field the slices are</th>\
         <th>held in</th></tr>"
    );
    for p in last.pinned.iter().take(10) {
        let fields: Vec<String> = p
            .fields
            .iter()
            .take(3)
            .map(|f| format!("{} ({} buffers)", esc(&f.describe()), f.buffers))
            .collect();
        let _ = writeln!(
            out,
            "<tr><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"name field\">{}</td><td class=\"name\">{}</td></tr>",
            p.buffers.blocks,
            bytes(p.buffers.bytes as f64),
            bytes(p.slice_bytes as f64),
            if fields.is_empty() {
                "not attributed".to_string()
            } else {
                fields.join("<br>")
            },
            esc(&p.holder.label())
        );
    }
    let _ = writeln!(out, "</table></section>");
}

/// The flame graph of the profile with the most live memory among the last
/// two (the last one may be taken after the load stopped), in an iframe so
/// that its script and styles stay apart from the page's.
fn flame(out: &mut String, profiles: &[StackView]) {
    let tail = &profiles[profiles.len().saturating_sub(2)..];
    let chosen = tail.iter().filter_map(|p| {
        let i = p.sample_index(Some("inuse_space")).ok()?;
        Some((p, i, p.total(i)))
    });
    let Some((view, index, _)) = chosen.max_by_key(|c| c.2) else {
        return;
    };
    let svg = match flame_graph_svg(view, index, "inuse_space: where live memory was allocated") {
        Ok(svg) => svg,
        Err(e @ crate::flame::FlameError::TooLarge(_)) => {
            let _ = writeln!(
                out,
                "<section id=\"flame\"><h2>Where live memory was allocated</h2><p>{}</p></section>",
                esc(&e.to_string())
            );
            return;
        }
        Err(_) => return,
    };
    let svg = String::from_utf8_lossy(&svg);
    // The iframe's document is HTML: drop the XML prolog and doctype.
    let body = svg.find("<svg").map_or(&svg[..], |i| &svg[i..]);
    let doc = format!(
        "<!doctype html><html><head><style>body {{ margin: 0 }} \
         svg {{ width: 100%; height: auto; }}</style></head><body>{body}</body></html>"
    );
    let _ = writeln!(
        out,
        "<section id=\"flame\"><h2>Where live memory was allocated</h2>\
         <iframe id=\"flamegraph\" title=\"flame graph\" onload=\"flameLoaded(this)\" srcdoc=\"{}\"></iframe>\
         <p id=\"flame-status\">flame graph: loading</p></section>",
        esc(&doc)
    );
}

#[cfg(test)]
mod tests {
    use super::esc;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<a href=\"x\">Vec<u8> & 'b'</a>"),
            "&lt;a href=&quot;x&quot;&gt;Vec&lt;u8&gt; &amp; &#39;b&#39;&lt;/a&gt;"
        );
    }
}
