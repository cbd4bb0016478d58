//! A grouped bar chart written as plain SVG text, so plots need no drawing crate.

use std::fmt::Write;

/// Colours cycled over the series.
const PALETTE: [&str; 12] = [
    "#4e79a7", "#a0cbe8", "#f28e2b", "#ffbe7d", "#59a14f", "#8cd17d", "#b6992d", "#499894",
    "#e15759", "#ff9d9a", "#79706e", "#222222",
];

/// Renders `values[g][s]` (a fraction in `0..=1` for group `g`, series `s`) as grouped
/// vertical bars on a 0–100 % axis, with a legend naming `series`.
///
/// # Panics
/// If `values` does not have one row per group and one column per series.
pub fn grouped_bars(
    title: &str,
    groups: &[String],
    series: &[String],
    values: &[Vec<f64>],
) -> String {
    assert_eq!(values.len(), groups.len());
    assert!(values.iter().all(|row| row.len() == series.len()));
    let (left, top, plot_h) = (60.0, 40.0, 320.0);
    let bar_w = 12.0;
    let group_w = bar_w * series.len() as f64 + 24.0;
    let plot_w = group_w * groups.len() as f64;
    let legend_w = 200.0;
    let width = left + plot_w + 20.0 + legend_w;
    let height = top + plot_h + 60.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" font-size="14" text-anchor="middle">{}</text>"#,
        left + plot_w / 2.0,
        escape(title)
    );
    for tick in 0..=10 {
        let y = top + plot_h - plot_h * f64::from(tick) / 10.0;
        let _ = writeln!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{y}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{}%</text>"##,
            left + plot_w,
            left - 6.0,
            y + 4.0,
            tick * 10
        );
    }
    for (g, name) in groups.iter().enumerate() {
        let x0 = left + group_w * g as f64 + 12.0;
        for (i, &v) in values[g].iter().enumerate() {
            let h = plot_h * v.clamp(0.0, 1.0);
            let _ = writeln!(
                s,
                r#"<rect x="{:.1}" y="{:.1}" width="{bar_w}" height="{h:.1}" fill="{}"><title>{} / {}: {:.2}%</title></rect>"#,
                x0 + bar_w * i as f64,
                top + plot_h - h,
                PALETTE[i % PALETTE.len()],
                escape(name),
                escape(&series[i]),
                v * 100.0
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            x0 + bar_w * series.len() as f64 / 2.0,
            top + plot_h + 18.0,
            escape(name)
        );
    }
    let _ = writeln!(
        s,
        r##"<line x1="{left}" x2="{left}" y1="{top}" y2="{}" stroke="#333"/><text x="14" y="{}" transform="rotate(-90 14 {})" text-anchor="middle">hit ratio</text>"##,
        top + plot_h,
        top + plot_h / 2.0,
        top + plot_h / 2.0
    );
    let lx = left + plot_w + 20.0;
    for (i, name) in series.iter().enumerate() {
        let y = top + 16.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="{y}" width="10" height="10" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            PALETTE[i % PALETTE.len()],
            lx + 14.0,
            y + 9.0,
            escape(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_bar_per_value_and_escaped_labels() {
        let svg = grouped_bars(
            "a<b",
            &["g1".into(), "g2".into()],
            &["x".into(), "y&z".into(), "w".into()],
            &[vec![0.1, 0.5, 1.0], vec![0.0, 0.2, 0.3]],
        );
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<title>").count(), 6);
        assert!(svg.contains("a&lt;b") && svg.contains("y&amp;z"));
    }
}
