//! The latency-percentile chart as a hand-written SVG: x = percentile on a log "nines"
//! axis (0, 90, 99, 99.9, 99.99, 99.999), y = latency in milliseconds; one curve per run.
//!
//! Why it exists: the percentile spectrum of several runs on one picture is how users
//! compare gateways (the tail matters, and a table of five numbers hides its shape). SVG
//! needs no drawing library and opens in any browser.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

/// One curve.
pub struct Run<'a> {
    pub label: String,
    pub hist: &'a Histogram<u64>,
}

/// Number of nines shown on the x axis (up to 99.999).
const NINES: f64 = 5.0;
const W: f64 = 900.0;
const H: f64 = 540.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 70.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// x position (in "nines") of quantile `q`: -log10(1 - q).
pub fn nines(q: f64) -> f64 {
    if q >= 1.0 {
        return f64::INFINITY;
    }
    -(1.0 - q).log10()
}

/// The quantile at `x` nines: 1 - 10^-x.
pub fn quantile_at(x: f64) -> f64 {
    1.0 - 10f64.powf(-x)
}

/// A "nice" axis step (1, 2 or 5 × 10^k) giving about `target` intervals up to `max`.
pub fn nice_step(max: f64, target: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let raw = max / target;
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let m = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * mag
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn fmt_ms(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').into()
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').into()
    }
}

/// The chart for `runs` (histograms in microseconds) as an SVG document.
pub fn svg(title: &str, runs: &[Run<'_>]) -> String {
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    // Curves: 501 points from 0 to 5 nines, in ms.
    let curves: Vec<Vec<(f64, f64)>> = runs
        .iter()
        .map(|r| {
            if r.hist.is_empty() {
                return Vec::new();
            }
            (0..=500)
                .map(|i| {
                    let x = i as f64 * NINES / 500.0;
                    (x, r.hist.value_at_quantile(quantile_at(x)) as f64 / 1e3)
                })
                .collect()
        })
        .collect();
    let ymax_data = curves
        .iter()
        .flatten()
        .map(|&(_, y)| y)
        .fold(0.0f64, f64::max);
    let step = nice_step(ymax_data.max(0.001), 6.0);
    let ymax = ((ymax_data / step).ceil().max(1.0)) * step;
    let px = |x: f64| LEFT + x / NINES * pw;
    let py = |y: f64| TOP + ph - y / ymax * ph;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="28" text-anchor="middle" font-size="16" font-weight="bold">{}</text>"#,
        W / 2.0,
        esc(title)
    );
    // Grid and axes.
    for i in 0..=NINES as usize {
        let x = px(nines(quantile_at(i as f64)).round());
        let label = match i {
            0 => "0%".to_string(),
            1 => "90%".to_string(),
            n => format!("99.{}%", "9".repeat(n - 2)).replace("99.%", "99%"),
        };
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            TOP + ph,
            TOP + ph + 18.0
        );
    }
    let mut v = 0.0;
    while v <= ymax + step * 1e-9 {
        let y = py(v);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            y + 4.0,
            fmt_ms(v)
        );
        v += step;
    }
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        LEFT + pw / 2.0,
        H - 20.0
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">latency (ms)</text>"#,
        TOP + ph / 2.0,
        TOP + ph / 2.0
    );
    // Curves and legend.
    for (i, (run, pts)) in runs.iter().zip(&curves).enumerate() {
        let color = COLORS[i % COLORS.len()];
        if !pts.is_empty() {
            let mut d = String::new();
            for (k, &(x, y)) in pts.iter().enumerate() {
                let _ = write!(
                    d,
                    "{}{:.1},{:.1}",
                    if k == 0 { "M" } else { " L" },
                    px(x),
                    py(y)
                );
            }
            let _ = writeln!(
                s,
                r#"<path d="{d}" fill="none" stroke="{color}" stroke-width="2"/>"#
            );
        }
        let ly = TOP + 16.0 + i as f64 * 18.0;
        let p99 = run.hist.value_at_quantile(0.99) as f64 / 1e3;
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{} (p99 {} ms, n={})</text>"#,
            LEFT + 12.0,
            LEFT + 36.0,
            LEFT + 42.0,
            ly + 4.0,
            esc(&run.label),
            fmt_ms(p99),
            run.hist.len()
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_axis() {
        assert_eq!(nines(0.0), 0.0);
        assert!((nines(0.9) - 1.0).abs() < 1e-9);
        assert!((nines(0.999) - 3.0).abs() < 1e-9);
        assert!((quantile_at(2.0) - 0.99).abs() < 1e-12);
        assert!(nines(1.0).is_infinite());
    }

    #[test]
    fn steps_are_nice() {
        assert_eq!(nice_step(10.0, 5.0), 2.0);
        assert_eq!(nice_step(3.0, 6.0), 0.5);
        assert_eq!(nice_step(0.7, 6.0), 0.2);
        assert_eq!(nice_step(0.0, 6.0), 1.0);
    }

    #[test]
    fn svg_has_a_curve_per_run_and_escapes_labels() {
        let mut a = crate::report::new_histogram();
        let mut b = crate::report::new_histogram();
        for v in 1..=10_000u64 {
            crate::report::record(&mut a, 100 + v / 10);
            crate::report::record(&mut b, 200 + v / 5);
        }
        let doc = svg(
            "rpc <test>",
            &[
                Run {
                    label: "ringgate & co".into(),
                    hist: &a,
                },
                Run {
                    label: "nginx".into(),
                    hist: &b,
                },
            ],
        );
        assert!(doc.starts_with("<svg"));
        assert!(doc.trim_end().ends_with("</svg>"));
        assert_eq!(doc.matches("<path ").count(), 2);
        assert!(doc.contains("ringgate &amp; co"));
        assert!(doc.contains("rpc &lt;test&gt;"));
        for l in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"] {
            assert!(doc.contains(&format!(">{l}</text>")), "{l}");
        }
        // An empty run draws no curve but still gets a legend entry.
        let e = crate::report::new_histogram();
        let doc = svg(
            "t",
            &[Run {
                label: "empty".into(),
                hist: &e,
            }],
        );
        assert_eq!(doc.matches("<path ").count(), 0);
        assert!(doc.contains("empty"));
    }
}
