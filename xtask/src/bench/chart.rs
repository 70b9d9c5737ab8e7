//! docs/benchmarks.svg: one bar per measure, how many times better the Rust host does
//! than `ziti tunnel host` (both through `ziti tunnel proxy`; right of the 1x line: Rust ahead), with the run-by-run range as a
//! whisker and plain TCP as a dot (the limit). Log scale, so 2x better and 2x worse are
//! equally long.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::Sizes;
use super::gateway::GatewayResults;
use super::stats::{Measure, Samples, Summary, Target};

const RUST: RGBColor = RGBColor(222, 95, 40);
const GATEWAY: RGBColor = RGBColor(120, 90, 170);
const LIMIT: RGBColor = RGBColor(60, 60, 60);

/// One row: the bar (median factor), its whisker and the limit dot, "higher is better".
struct Row {
    label: String,
    factor: f64,
    range: Option<(f64, f64)>,
    limit: Option<f64>,
    colour: RGBColor,
}

pub fn draw(path: &Path, samples: &Samples, gateway: Option<&GatewayResults>, sizes: &Sizes) -> Result<()> {
    let rows = rows(samples, gateway, sizes);
    if rows.is_empty() {
        return Err(anyhow!("nothing measured to chart"));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let all = rows.iter().flat_map(|r| [Some(r.factor), r.limit, r.range.map(|x| x.0), r.range.map(|x| x.1)]);
    let (lo, hi) = all.flatten().fold((1.0f64, 1.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = (lo / 1.5, hi * 1.5);

    let n = rows.len() as i32;
    let root = SVGBackend::new(path, (960, 120 + 34 * rows.len() as u32)).into_drawing_area();
    let plot = |e: DrawingAreaErrorKind<_>| anyhow!("drawing the chart: {e:?}");
    root.fill(&WHITE).map_err(plot)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Rust host vs ziti tunnel host over the same overlay service (× better; right of 1× = Rust ahead)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(300)
        .build_cartesian_2d((lo..hi).log_scale(), (0..n).into_segmented())
        .map_err(plot)?;
    let labels: Vec<String> = rows.iter().rev().map(|r| r.label.clone()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(rows.len())
        .y_label_formatter(&|y| match y {
            SegmentValue::CenterOf(i) => labels.get(*i as usize).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .x_labels(10)
        .x_label_formatter(&|x| format!("{x:.2}×"))
        .x_desc("times better than ziti tunnel host (throughput, rate: Rust/Go; latency, memory, CPU: Go/Rust)")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(plot)?;

    for (i, row) in rows.iter().rev().enumerate() {
        let i = i as i32;
        let mut bar = Rectangle::new(
            [(row.factor.min(1.0), SegmentValue::Exact(i)), (row.factor.max(1.0), SegmentValue::Exact(i + 1))],
            row.colour.filled(),
        );
        bar.set_margin(6, 6, 0, 0);
        chart.draw_series(std::iter::once(bar)).map_err(plot)?;
        if let Some((a, b)) = row.range {
            let whisker = PathElement::new(
                vec![(a, SegmentValue::CenterOf(i)), (b, SegmentValue::CenterOf(i))],
                BLACK.stroke_width(2),
            );
            chart.draw_series(std::iter::once(whisker)).map_err(plot)?;
        }
        if let Some(limit) = row.limit {
            let dot = Circle::new((limit, SegmentValue::CenterOf(i)), 5, LIMIT.filled());
            chart.draw_series(std::iter::once(dot)).map_err(plot)?;
        }
        let style = TextStyle::from(("sans-serif", 13)).pos(Pos::new(HPos::Left, VPos::Center));
        let at = (row.factor.max(1.0) * 1.04, SegmentValue::CenterOf(i));
        let text = Text::new(format!("{:.2}×", row.factor), at, style);
        chart.draw_series(std::iter::once(text)).map_err(plot)?;
    }
    let parity =
        PathElement::new(vec![(1.0, SegmentValue::Exact(0)), (1.0, SegmentValue::Exact(n))], BLACK.stroke_width(2));
    chart.draw_series(std::iter::once(parity)).map_err(plot)?;

    chart
        .draw_series(std::iter::once(Circle::new((lo, SegmentValue::Exact(n)), 0, LIMIT.filled())))
        .map_err(plot)?
        .label("plain TCP loopback vs ziti tunnel host (the limit)")
        .legend(|(x, y)| Circle::new((x + 8, y), 5, LIMIT.filled()));
    if gateway.is_some() {
        chart
            .draw_series(std::iter::once(Circle::new((lo, SegmentValue::Exact(n)), 0, GATEWAY.filled())))
            .map_err(plot)?
            .label("gateway rows: overlay vs the gateway on plain TCP")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], GATEWAY.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(plot)?;
    root.present().map_err(plot)?;
    Ok(())
}

fn rows(samples: &Samples, gateway: Option<&GatewayResults>, sizes: &Sizes) -> Vec<Row> {
    let mut rows = Vec::new();
    for measure in Measure::ALL {
        let better = |a: f64, b: f64| if measure.higher_is_better() { a / b } else { b / a };
        let (Some(rust), Some(go)) = (samples.get(measure, Target::Rust), samples.get(measure, Target::TunnelHost))
        else {
            continue;
        };
        let paired = samples.paired_ratio(measure, Target::Rust, Target::TunnelHost);
        let range = paired.map(|p| {
            let (a, b) = (better(p.min, 1.0), better(p.max, 1.0));
            (a.min(b), a.max(b))
        });
        let limit = samples.get(measure, Target::Tcp).map(|tcp| better(tcp.median, go.median));
        let label = format!("{} ({})", measure.label(sizes.idle_conns), measure.unit());
        rows.push(Row { label, factor: better(rust.median, go.median), range, limit, colour: RUST });
    }
    for row in gateway.map(|g| g.rows()).into_iter().flatten() {
        if let (Some(Summary { median: o, .. }), Some(Summary { median: t, .. })) = (row.overlay, row.tcp) {
            let factor = if row.higher_is_better { o / t } else { t / o };
            let label = format!("{} ({})", row.label, row.unit);
            rows.push(Row { label, factor, range: None, limit: None, colour: GATEWAY });
        }
    }
    rows
}
