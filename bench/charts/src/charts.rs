//! PNG charts of a results file: plotters draws the shapes on its bitmap backend, and
//! `text` sets the text.

use std::ops::Range;
use std::path::{Path, PathBuf};

use plotters::coord::cartesian::Cartesian2d;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::results::{Error, Latency, Results, Stat, Throughput};
use crate::text::{Area, DrawResult, Fonts, Style, H, V};

pub const WIDTH: u32 = 1000;
pub const HEIGHT: u32 = 600;

/// The clients in the order every chart shows them, each with its fixed colour
/// (the Okabe–Ito palette, which stays apart for colour-blind readers).
const CLIENTS: [(&str, RGBColor); 5] = [
    ("kpipe", RGBColor(0xD5, 0x5E, 0x00)),
    ("java", RGBColor(0x00, 0x72, 0xB2)),
    ("rdkafka", RGBColor(0x00, 0x9E, 0x73)),
    ("kafka-go", RGBColor(0xE6, 0x9F, 0x00)),
    ("franz-go", RGBColor(0xCC, 0x79, 0xA7)),
];
/// For clients not in CLIENTS, in order of first appearance.
const EXTRA_COLOURS: [RGBColor; 4] = [
    RGBColor(0x56, 0xB4, 0xE9),
    RGBColor(0x66, 0x66, 0x66),
    RGBColor(0xA6, 0x8A, 0x00),
    RGBColor(0x7A, 0x3E, 0x9D),
];
const INK: RGBColor = RGBColor(0x22, 0x22, 0x22);
const GREY: RGBColor = RGBColor(0x66, 0x66, 0x66);

/// Clients in display order: the known ones in CLIENTS order, then the rest as they come.
fn order_clients<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in names {
        if !out.iter().any(|o| o == n) {
            out.push(n.to_string());
        }
    }
    let rank = |n: &str| {
        CLIENTS
            .iter()
            .position(|(c, _)| *c == n)
            .unwrap_or(CLIENTS.len())
    };
    out.sort_by_key(|n| rank(n)); // stable: unknown clients keep their order
    out
}

/// One colour per client, the same in every chart of a results file.
struct Palette {
    extra: Vec<String>,
}

impl Palette {
    fn new(r: &Results) -> Palette {
        let all = r
            .throughput
            .iter()
            .map(|t| t.client.as_str())
            .chain(r.latency.iter().map(|l| l.client.as_str()));
        let extra = order_clients(all)
            .into_iter()
            .filter(|c| !CLIENTS.iter().any(|(k, _)| k == c))
            .collect();
        Palette { extra }
    }

    fn colour(&self, client: &str) -> RGBColor {
        if let Some((_, c)) = CLIENTS.iter().find(|(k, _)| *k == client) {
            return *c;
        }
        let i = self.extra.iter().position(|c| c == client).unwrap_or(0);
        EXTRA_COLOURS[i % EXTRA_COLOURS.len()]
    }
}

/// `c` mixed with white; `white` = 0 keeps it, 1 gives white.
fn tint(c: RGBColor, white: f64) -> RGBColor {
    let mix = |v: u8| (v as f64 + (255.0 - v as f64) * white).round() as u8;
    RGBColor(mix(c.0), mix(c.1), mix(c.2))
}

/// "100 B", "1 KiB", "16 KiB".
fn fmt_size(bytes: u64) -> String {
    if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}

/// 1234567 -> "1,234,567".
fn group_thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// A number for an axis tick or a label: about 3 significant digits for small values,
/// thousands grouped for large ones, no trailing zeros.
fn fmt_num(v: f64) -> String {
    if v.abs() >= 999.5 {
        return group_thousands(v.round() as u64);
    }
    let decimals = if v == 0.0 || v.abs() >= 100.0 {
        0
    } else if v.abs() >= 10.0 {
        1
    } else if v.abs() >= 1.0 {
        2
    } else {
        3
    };
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// 531234 -> "531k", 1520000 -> "1.52M".
fn fmt_rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", fmt_num(v / 1e6))
    } else if v >= 1e3 {
        format!("{}k", fmt_num(v / 1e3))
    } else {
        fmt_num(v)
    }
}

/// The y axis of a chart: what it spans and where its ticks go. A log axis is drawn as a
/// linear one over log10 of the values, which keeps one coordinate type for both.
#[derive(Clone)]
struct YAxis {
    log: bool,
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
    minor: Vec<f64>,
}

impl YAxis {
    /// From 0 to a little above `max`, leaving `headroom` (a fraction) for labels.
    fn linear(max: f64, headroom: f64) -> YAxis {
        let max = if max > 0.0 { max } else { 1.0 };
        let hi = max * (1.0 + headroom);
        let rough = hi / 6.0;
        let mag = 10f64.powf(rough.log10().floor());
        let step = [1.0, 2.0, 2.5, 5.0, 10.0]
            .iter()
            .map(|m| m * mag)
            .find(|s| *s >= rough)
            .unwrap_or(10.0 * mag);
        let ticks = (0..)
            .map(|i| i as f64 * step)
            .take_while(|t| *t <= hi * 1.0001)
            .collect();
        YAxis {
            log: false,
            lo: 0.0,
            hi,
            ticks,
            minor: Vec::new(),
        }
    }

    /// Decades around [min, max], with ticks at 1, 2 and 5 of each.
    fn log(min: f64, max: f64, headroom_decades: f64) -> YAxis {
        let min = min.max(1e-9);
        let below = |v: f64| {
            let mag = 10f64.powf(v.log10().floor());
            [5.0, 2.0, 1.0]
                .iter()
                .map(|m| m * mag)
                .find(|t| *t <= v)
                .unwrap_or(mag)
        };
        let lo = below(min * 0.9);
        let hi = max * 10f64.powf(headroom_decades);
        let (mut ticks, mut minor) = (Vec::new(), Vec::new());
        let mut mag = 10f64.powf(lo.log10().floor());
        while mag <= hi {
            for m in 1..10 {
                let v = m as f64 * mag;
                if v >= lo * 0.9999 && v <= hi {
                    if [1, 2, 5].contains(&m) {
                        ticks.push(v);
                    } else {
                        minor.push(v);
                    }
                }
            }
            mag *= 10.0;
        }
        YAxis {
            log: true,
            lo,
            hi,
            ticks,
            minor,
        }
    }

    /// Log when the values span more than two decades, else linear from 0.
    fn auto(min: f64, max: f64) -> YAxis {
        if min > 0.0 && max / min > 100.0 {
            YAxis::log(min, max, 0.25)
        } else {
            YAxis::linear(max, 0.15)
        }
    }

    fn to_plot(&self, v: f64) -> f64 {
        if self.log {
            v.max(self.lo).log10()
        } else {
            v
        }
    }

    /// The plotted range, for plotters' coordinates.
    fn range(&self) -> Range<f64> {
        self.to_plot(self.lo)..self.to_plot(self.hi)
    }
}

/// One bar: its median and range, its colour, and an optional label above it.
struct Bar {
    stat: Stat,
    colour: RGBColor,
    label: Option<String>,
}

struct Group {
    label: String,
    /// One slot per series; None leaves the slot empty with an "n/a" mark.
    bars: Vec<Option<Bar>>,
}

struct Panel {
    caption: Option<String>,
    groups: Vec<Group>,
    y: YAxis,
}

struct BarChart {
    title: String,
    subtitle: String,
    legend: Vec<(String, RGBColor)>,
    y_desc: String,
    panels: Vec<Panel>,
}

fn footer(r: &Results) -> String {
    let m = &r.meta;
    let runs = if m.runs == 1 {
        "a single run (no range to show)".to_string()
    } else {
        format!("median of {} runs, error bars show min–max", m.runs)
    };
    let mut s = format!(
        "{} · Apache Kafka {} · {} CPU{} · {runs}",
        m.date,
        m.kafka,
        m.cpus,
        if m.cpus == 1 { "" } else { "s" },
    );
    if let Some(c) = &m.command {
        s.push_str(&format!(" · {c}"));
    }
    s
}

fn title_case(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Phases in the order produce, consume, then any other as it comes.
fn phases(r: &Results) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in &r.throughput {
        if !out.contains(&t.phase) {
            out.push(t.phase.clone());
        }
    }
    let rank = |p: &str| match p {
        "produce" => 0,
        "consume" => 1,
        _ => 2,
    };
    out.sort_by_key(|p| rank(p));
    out
}

#[derive(Clone, Copy)]
enum Metric {
    Rate,
    Cpu,
}

/// One panel per record size, one group per acks × codec, one bar per client.
fn throughput_chart(r: &Results, palette: &Palette, phase: &str, metric: Metric) -> BarChart {
    let rows: Vec<&Throughput> = r.throughput.iter().filter(|t| t.phase == phase).collect();
    let clients = order_clients(rows.iter().map(|t| t.client.as_str()));
    let mut sizes: Vec<u64> = rows.iter().map(|t| t.size).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let rank = |v: &str, order: &[&str]| {
        (
            order.iter().position(|o| *o == v).unwrap_or(order.len()),
            v.to_string(),
        )
    };
    let value = |t: &Throughput| match metric {
        // records/s in thousands
        Metric::Rate => Stat {
            median: t.rate.median / 1e3,
            min: t.rate.min / 1e3,
            max: t.rate.max / 1e3,
        },
        Metric::Cpu => t.cpu_per_m,
    };
    let panels = sizes
        .iter()
        .map(|&size| {
            let here: Vec<&&Throughput> = rows.iter().filter(|t| t.size == size).collect();
            let mut scenarios: Vec<(&str, &str)> = here
                .iter()
                .map(|t| (t.acks.as_str(), t.codec.as_str()))
                .collect();
            scenarios.sort_by_key(|(a, c)| (rank(a, &["1", "all"]), rank(c, &["none", "lz4"])));
            scenarios.dedup();
            let groups = scenarios
                .iter()
                .map(|&(acks, codec)| Group {
                    label: format!("acks={acks}, {codec}"),
                    bars: clients
                        .iter()
                        .map(|c| {
                            here.iter()
                                .find(|t| t.acks == acks && t.codec == codec && t.client == *c)
                                .map(|t| Bar {
                                    stat: value(t),
                                    colour: palette.colour(c),
                                    label: None,
                                })
                        })
                        .collect(),
                })
                .collect::<Vec<_>>();
            let max = here.iter().map(|t| value(t).max).fold(0.0, f64::max);
            let mut counts: Vec<u64> = here.iter().map(|t| t.records).collect();
            counts.sort_unstable();
            counts.dedup();
            let per_run = match counts.as_slice() {
                [n] => format!(" ({} per run)", group_thousands(*n)),
                _ => String::new(),
            };
            Panel {
                caption: Some(format!("{} records{per_run}", fmt_size(size))),
                groups,
                y: YAxis::linear(max, 0.08),
            }
        })
        .collect();
    let mut notes = Vec::new();
    if phase != "produce" {
        notes.push("groups: acks and codec the records were produced with");
    }
    if sizes.len() > 1 {
        notes.push("one panel per record size, own y scale");
    }
    let notes: String = notes.iter().map(|n| format!("; {n}")).collect();
    let (title, subtitle, y_desc) = match metric {
        Metric::Rate => (
            format!(
                "{} throughput by client and record size (higher is better)",
                title_case(phase)
            ),
            format!("records/s in thousands{notes}"),
            "records/s (thousands)",
        ),
        Metric::Cpu => (
            format!(
                "{} CPU cost by client and record size (lower is better)",
                title_case(phase)
            ),
            format!("client CPU seconds (user + sys) per million records{notes}"),
            "CPU s per M records",
        ),
    };

    BarChart {
        title,
        subtitle,
        legend: clients
            .iter()
            .map(|c| (c.clone(), palette.colour(c)))
            .collect(),
        y_desc: y_desc.to_string(),
        panels,
    }
}

/// One group per client (and offered rate, when there are several), with p50, p99 and
/// p99.9 bars in three tints of the client's colour.
fn latency_chart(r: &Results, palette: &Palette) -> BarChart {
    let clients = order_clients(r.latency.iter().map(|l| l.client.as_str()));
    let mut rates: Vec<f64> = r.latency.iter().map(|l| l.rate).collect();
    rates.sort_by(f64::total_cmp);
    rates.dedup();
    const TINTS: [f64; 3] = [0.62, 0.3, 0.0];
    let all = r.latency.iter().flat_map(|l| [l.p50, l.p99, l.p999]);
    let min = all.clone().map(|s| s.min).fold(f64::INFINITY, f64::min);
    let max = all.map(|s| s.max).fold(0.0, f64::max);
    // One y axis for every panel, so that rates compare at a glance.
    let y = YAxis::auto(min, max);
    let group = |l: &Latency| {
        let mut label = l.client.clone();
        if let Some(sent) = l.sent_rate.filter(|s| *s < l.rate * 0.99) {
            label.push_str(&format!(" (sent {}/s)", fmt_rate(sent)));
        }
        let colour = palette.colour(&l.client);
        Group {
            label,
            bars: [l.p50, l.p99, l.p999]
                .iter()
                .zip(TINTS)
                .map(|(s, t)| {
                    Some(Bar {
                        stat: *s,
                        colour: tint(colour, t),
                        label: Some(fmt_num(s.median)),
                    })
                })
                .collect(),
        }
    };
    // One panel per offered rate, one group per client.
    let panels = rates
        .iter()
        .map(|rate| Panel {
            caption: (rates.len() > 1)
                .then(|| format!("{} records/s offered", group_thousands(rate.round() as u64))),
            groups: clients
                .iter()
                .filter_map(|c| {
                    r.latency
                        .iter()
                        .find(|l| l.rate == *rate && l.client == *c)
                        .map(group)
                })
                .collect(),
            y: y.clone(),
        })
        .collect();
    let title = match rates.as_slice() {
        [rate] => format!(
            "End-to-end latency by client at {} records/s (lower is better)",
            group_thousands(rate.round() as u64)
        ),
        _ => {
            "End-to-end latency by client, one panel per offered rate (lower is better)".to_string()
        }
    };
    let subtitle = format!(
        "scheduled send to consumer hand-off, ms{}; each group: p50, p99, p99.9 from light to \
         dark, median labelled",
        if y.log { ", log scale" } else { "" }
    );
    let grey = RGBColor(0x55, 0x55, 0x55);
    BarChart {
        title,
        subtitle,
        legend: ["p50", "p99", "p99.9"]
            .iter()
            .zip(TINTS)
            .map(|(p, t)| (p.to_string(), tint(grey, t)))
            .collect(),
        y_desc: format!("latency, ms{}", if y.log { " (log scale)" } else { "" }),
        panels,
    }
}

const TITLE: f32 = 25.0;
const SUBTITLE: f32 = 16.0;
const LEGEND: f32 = 17.0;
const CAPTION: f32 = 17.0;
const TICK: f32 = 15.0;
const GROUP_LABEL: f32 = 16.0;
const AXIS_DESC: f32 = 16.0;
const VALUE: f32 = 14.0;
const FOOTER: f32 = 14.0;
const GRID: RGBColor = RGBColor(0xD4, 0xD4, 0xD4);
const GRID_LIGHT: RGBColor = RGBColor(0xEE, 0xEE, 0xEE);

type Chart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

fn line(root: &Area<'_>, from: (i32, i32), to: (i32, i32), colour: RGBColor) -> DrawResult {
    root.draw(&PathElement::new(vec![from, to], colour.stroke_width(1)))?;
    Ok(())
}

/// A median bar's min–max whisker with its caps, in chart coordinates.
fn whisker(chart: &Chart<'_, '_>, x: f64, lo: f64, hi: f64, cap: f64) -> DrawResult {
    for pts in [
        vec![(x, lo), (x, hi)],
        vec![(x - cap, lo), (x + cap, lo)],
        vec![(x - cap, hi), (x + cap, hi)],
    ] {
        chart
            .plotting_area()
            .draw(&PathElement::new(pts, INK.stroke_width(1)))?;
    }
    Ok(())
}

/// The title, subtitle and legend at the top and the footer at the bottom; returns the
/// area left between them.
fn frame<'a>(
    root: &Area<'a>,
    fonts: &Fonts,
    title: &str,
    subtitle: &str,
    legend: &[(String, RGBColor)],
    footer: &str,
) -> DrawResult<Area<'a>> {
    root.fill(&WHITE)?;
    let (w, h) = root.dim_in_pixel();
    let top = if legend.is_empty() { 66 } else { 96 };
    let (_, rest) = root.split_vertically(top);
    let (body, _) = rest.split_vertically(h - top - 30);
    let cx = w as i32 / 2;
    let top_centre = (H::Center, V::Middle);
    // Long lines shrink a little, then lose their end, rather than run off the image.
    let room = w as f32 - 24.0;
    let fit = |s: &str, style: Style| {
        let style = fonts.shrink_to_fit(s, style, room, style.size * 0.8);
        (fonts.ellipsize(s, &style, room), style)
    };
    let (title, style) = fit(title, Style::new(TITLE, INK).bold());
    fonts.draw(root, &title, (cx, 20), &style, top_centre, false)?;
    let (subtitle, style) = fit(subtitle, Style::new(SUBTITLE, GREY));
    fonts.draw(root, &subtitle, (cx, 47), &style, top_centre, false)?;
    if !legend.is_empty() {
        let style = Style::new(LEGEND, INK);
        let (swatch, gap, pad) = (16, 7, 28);
        let widths: Vec<i32> = legend
            .iter()
            .map(|(l, _)| fonts.width(l, &style).ceil() as i32)
            .collect();
        let total: i32 = widths.iter().map(|tw| swatch + gap + tw).sum::<i32>()
            + pad * (legend.len() as i32 - 1);
        let (mut x, y) = (cx - total / 2, 78);
        for ((label, colour), tw) in legend.iter().zip(&widths) {
            root.draw(&Rectangle::new(
                [(x, y - swatch / 2), (x + swatch, y + swatch / 2)],
                colour.filled(),
            ))?;
            fonts.draw(
                root,
                label,
                (x + swatch + gap, y),
                &style,
                (H::Left, V::Middle),
                false,
            )?;
            x += swatch + gap + tw + pad;
        }
    }
    let (footer, style) = fit(footer, Style::new(FOOTER, GREY));
    fonts.draw(
        root,
        &footer,
        (12, h as i32 - 14),
        &style,
        (H::Left, V::Middle),
        false,
    )?;
    Ok(body)
}

/// Horizontal grid lines and labelled ticks for `y` across the chart's plotting area.
/// Ticks closer than a label's height are thinned out: on a log axis to the powers of
/// ten first, then to every n-th.
fn y_grid(root: &Area<'_>, fonts: &Fonts, chart: &Chart<'_, '_>, y: &YAxis) -> DrawResult {
    let (xr, _) = chart.plotting_area().get_pixel_range();
    let x0 = chart.x_range().start;
    let py = |v: f64| chart.backend_coord(&(x0, y.to_plot(v))).1;
    let min_gap = |ticks: &[f64]| {
        ticks
            .windows(2)
            .map(|w| (py(w[0]) - py(w[1])).abs())
            .min()
            .unwrap_or(i32::MAX)
    };
    const ROOM: i32 = 22;
    let mut ticks = y.ticks.clone();
    let mut minor = y.minor.clone();
    if y.log && min_gap(&ticks) < ROOM {
        let (decades, rest): (Vec<f64>, Vec<f64>) = ticks
            .iter()
            .partition(|v| (v.log10() - v.log10().round()).abs() < 1e-9);
        ticks = decades;
        minor.extend(rest);
    }
    let stride = (ROOM as f64 / min_gap(&ticks).max(1) as f64)
        .ceil()
        .max(1.0) as usize;
    if min_gap(&minor) >= 4 {
        for v in &minor {
            line(root, (xr.start, py(*v)), (xr.end - 1, py(*v)), GRID_LIGHT)?;
        }
    }
    for v in ticks.iter().step_by(stride) {
        let p = py(*v);
        line(root, (xr.start, p), (xr.end - 1, p), GRID)?;
        line(root, (xr.start - 5, p), (xr.start, p), GREY)?;
        fonts.draw(
            root,
            &fmt_num(*v),
            (xr.start - 8, p),
            &Style::new(TICK, INK),
            (H::Right, V::Middle),
            false,
        )?;
    }
    Ok(())
}

/// The y axis description, read bottom to top, at `x` and centred on `ys`.
fn y_desc(root: &Area<'_>, fonts: &Fonts, x: i32, ys: Range<i32>, desc: &str) -> DrawResult {
    let style = Style::new(AXIS_DESC, INK);
    let room = (ys.end - ys.start) as f32;
    let style = fonts.shrink_to_fit(desc, style, room, 11.0);
    let desc = fonts.ellipsize(desc, &style, room);
    fonts.draw(
        root,
        &desc,
        (x, (ys.start + ys.end) / 2),
        &style,
        (H::Center, V::Middle),
        true,
    )
}

/// The left and bottom axis lines, drawn last so that bars do not cover them.
fn axis_lines(root: &Area<'_>, chart: &Chart<'_, '_>) -> DrawResult {
    let (xr, yr) = chart.plotting_area().get_pixel_range();
    line(root, (xr.start, yr.start), (xr.start, yr.end - 1), GREY)?;
    line(root, (xr.start, yr.end - 1), (xr.end - 1, yr.end - 1), GREY)?;
    Ok(())
}

fn draw_bar_chart(path: &Path, fonts: &Fonts, chart: &BarChart, footer: &str) -> DrawResult {
    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    let body = frame(
        &root,
        fonts,
        &chart.title,
        &chart.subtitle,
        &chart.legend,
        footer,
    )?;
    let rows = body.split_evenly((chart.panels.len(), 1));
    let mut span: Option<Range<i32>> = None;
    for (panel, area) in chart.panels.iter().zip(&rows) {
        let ys = draw_bar_panel(&root, fonts, area, panel)?;
        span = Some(match span {
            None => ys,
            Some(s) => s.start.min(ys.start)..s.end.max(ys.end),
        });
    }
    // One description for all the panels, which share what y measures.
    if let Some(ys) = span {
        y_desc(
            &root,
            fonts,
            body.get_base_pixel().0 + 14,
            ys,
            &chart.y_desc,
        )?;
    }
    root.present()?;
    Ok(())
}

fn draw_bar_panel(
    root: &Area<'_>,
    fonts: &Fonts,
    area: &Area<'_>,
    panel: &Panel,
) -> DrawResult<Range<i32>> {
    let n = panel.groups.len();
    let y = &panel.y;
    let chart = ChartBuilder::on(area)
        .margin_left(4)
        .margin_right(20)
        .margin_top(if panel.caption.is_some() { 30 } else { 10 })
        .margin_bottom(4)
        .x_label_area_size(30)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..n as f64, y.range())?;
    y_grid(root, fonts, &chart, y)?;
    let (xr, yr) = chart.plotting_area().get_pixel_range();
    if let Some(caption) = &panel.caption {
        fonts.draw(
            root,
            caption,
            ((xr.start + xr.end) / 2, yr.start - 8),
            &Style::new(CAPTION, INK).bold(),
            (H::Center, V::Bottom),
            false,
        )?;
    }

    let base = y.to_plot(y.lo);
    let mut labels: Vec<(String, (i32, i32), Style, V)> = Vec::new();
    for (gi, group) in panel.groups.iter().enumerate() {
        let centre = chart.backend_coord(&(gi as f64 + 0.5, base));
        let room = (xr.end - xr.start) as f32 / n as f32 - 6.0;
        let style = fonts.shrink_to_fit(&group.label, Style::new(GROUP_LABEL, INK), room, 10.0);
        labels.push((
            fonts.ellipsize(&group.label, &style, room),
            (centre.0, yr.end + 7),
            style,
            V::Top,
        ));
        let slot = 0.8 / group.bars.len().max(1) as f64;
        for (si, bar) in group.bars.iter().enumerate() {
            let x0 = gi as f64 + 0.1 + si as f64 * slot;
            let xc = x0 + slot / 2.0;
            let Some(bar) = bar else {
                let p = chart.backend_coord(&(xc, base));
                labels.push((
                    "n/a".into(),
                    (p.0, p.1 - 3),
                    Style::new(VALUE, GREY),
                    V::Bottom,
                ));
                continue;
            };
            let top = y.to_plot(bar.stat.median);
            let (lo, hi) = (y.to_plot(bar.stat.min), y.to_plot(bar.stat.max));
            chart.plotting_area().draw(&Rectangle::new(
                [(x0 + slot * 0.08, base), (x0 + slot * 0.92, top)],
                bar.colour.filled(),
            ))?;
            whisker(&chart, xc, lo, hi, slot * 0.2)?;
            if let Some(label) = &bar.label {
                let p = chart.backend_coord(&(xc, hi));
                labels.push((
                    label.clone(),
                    (p.0, p.1 - 4),
                    Style::new(VALUE, INK),
                    V::Bottom,
                ));
            }
        }
    }
    axis_lines(root, &chart)?;
    for (s, at, style, v) in labels {
        fonts.draw(root, &s, at, &style, (H::Center, v), false)?;
    }
    Ok(yr)
}

fn draw_scaling(path: &Path, fonts: &Fonts, r: &Results, footer: &str) -> DrawResult {
    let mut rows: Vec<_> = r.scaling.iter().collect();
    rows.sort_by_key(|s| s.threads);
    // Threads double from one point to the next: space them evenly, by log2.
    let xs: Vec<f64> = rows.iter().map(|s| (s.threads as f64).log2()).collect();
    let (x_lo, x_hi) = (xs[0] - 0.4, xs[xs.len() - 1] + 0.4);
    let max = rows.iter().map(|s| s.rate.max).fold(0.0, f64::max) / 1e3;
    let y = YAxis::linear(max, 0.15);
    let colour = CLIENTS[0].1;

    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    let cpus = r.meta.cpus;
    let body = frame(
        &root,
        fonts,
        "kpipe command scaling: events/s by --threads (higher is better)",
        &format!(
            "kpipe produce --threads T, JSON telemetry events/s in thousands; \
             the machine has {cpus} CPU{}",
            if cpus == 1 { "" } else { "s" }
        ),
        &[],
        footer,
    )?;
    let chart = ChartBuilder::on(&body)
        .margin_left(4)
        .margin_right(30)
        .margin_top(16)
        .margin_bottom(4)
        .x_label_area_size(58)
        .y_label_area_size(80)
        .build_cartesian_2d(x_lo..x_hi, y.range())?;
    let (xr, yr) = chart.plotting_area().get_pixel_range();
    for (s, &x) in rows.iter().zip(&xs) {
        let px = chart.backend_coord(&(x, 0.0)).0;
        line(&root, (px, yr.start), (px, yr.end - 1), GRID)?;
        line(&root, (px, yr.end - 1), (px, yr.end + 4), GREY)?;
        fonts.draw(
            &root,
            &s.threads.to_string(),
            (px, yr.end + 7),
            &Style::new(TICK, INK),
            (H::Center, V::Top),
            false,
        )?;
    }
    fonts.draw(
        &root,
        "threads (--threads)",
        ((xr.start + xr.end) / 2, yr.end + 32),
        &Style::new(AXIS_DESC, INK),
        (H::Center, V::Top),
        false,
    )?;
    y_grid(&root, fonts, &chart, &y)?;
    let left = body.get_base_pixel().0 + 14;
    y_desc(&root, fonts, left, yr.clone(), "events/s (thousands)")?;

    let pts: Vec<(f64, f64)> = rows
        .iter()
        .zip(&xs)
        .map(|(s, x)| (*x, s.rate.median / 1e3))
        .collect();
    chart
        .plotting_area()
        .draw(&PathElement::new(pts.clone(), colour.stroke_width(3)))?;
    for p in &pts {
        chart
            .plotting_area()
            .draw(&Circle::new(*p, 5, colour.filled()))?;
    }
    for (s, &x) in rows.iter().zip(&xs) {
        let (lo, hi) = (s.rate.min / 1e3, s.rate.max / 1e3);
        whisker(&chart, x, lo, hi, 0.05)?;
    }
    axis_lines(&root, &chart)?;
    for (s, &x) in rows.iter().zip(&xs) {
        let p = chart.backend_coord(&(x, s.rate.max / 1e3));
        fonts.draw(
            &root,
            &format!("{}/s", fmt_rate(s.rate.median)),
            (p.0, p.1 - 5),
            &Style::new(VALUE + 1.0, INK).bold(),
            (H::Center, V::Bottom),
            false,
        )?;
    }
    root.present()?;
    Ok(())
}

/// Writes every chart whose section `r` has into `out_dir`; returns their paths.
pub fn render_all(r: &Results, out_dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let fonts = Fonts::load()?;
    let palette = Palette::new(r);
    let footer = footer(r);
    let mut written = Vec::new();
    let wrap = |path: &Path| {
        let path = path.to_path_buf();
        move |e: Box<dyn std::error::Error>| Error(format!("cannot draw {}: {e}", path.display()))
    };
    for phase in phases(r) {
        for (name, metric) in [("throughput", Metric::Rate), ("cpu", Metric::Cpu)] {
            let path = out_dir.join(format!("{name}-{phase}.png"));
            let chart = throughput_chart(r, &palette, &phase, metric);
            draw_bar_chart(&path, &fonts, &chart, &footer).map_err(wrap(&path))?;
            written.push(path);
        }
    }
    if !r.latency.is_empty() {
        let path = out_dir.join("latency.png");
        draw_bar_chart(&path, &fonts, &latency_chart(r, &palette), &footer).map_err(wrap(&path))?;
        written.push(path);
    }
    if !r.scaling.is_empty() {
        let path = out_dir.join("scaling.png");
        draw_scaling(&path, &fonts, r, &footer).map_err(wrap(&path))?;
        written.push(path);
    }
    // The throughput charts first by metric, as a reader looks for them.
    written.sort_by_key(|p| {
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        [
            "throughput-produce",
            "throughput-consume",
            "cpu-produce",
            "cpu-consume",
        ]
        .iter()
        .position(|n| name.starts_with(n))
        .unwrap_or(4)
    });
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_formatted_for_people() {
        assert_eq!(fmt_num(0.0), "0");
        assert_eq!(fmt_num(0.25), "0.25");
        assert_eq!(fmt_num(2.5), "2.5");
        assert_eq!(fmt_num(12.34), "12.3");
        assert_eq!(fmt_num(1250.0), "1,250");
        assert_eq!(fmt_num(999.7), "1,000");
        assert_eq!(fmt_rate(48_512.0), "48.5k");
        assert_eq!(fmt_rate(531_234.0), "531k");
        assert_eq!(fmt_rate(1_520_000.0), "1.52M");
        assert_eq!(fmt_size(100), "100 B");
        assert_eq!(fmt_size(1024), "1 KiB");
    }

    #[test]
    fn clients_keep_the_fixed_order() {
        let got = order_clients(["franz-go", "other", "kpipe", "java", "zeta"]);
        assert_eq!(got, ["kpipe", "java", "franz-go", "other", "zeta"]);
    }

    #[test]
    fn axes_cover_the_data() {
        let y = YAxis::linear(1234.0, 0.1);
        assert!(y.hi >= 1234.0 && y.ticks[0] == 0.0 && y.ticks.len() >= 4);
        let y = YAxis::auto(0.8, 180.0);
        assert!(y.log && y.lo <= 0.8 && y.hi >= 180.0);
        assert!(y.ticks.contains(&1.0) && y.ticks.contains(&100.0));
        assert!(!YAxis::auto(1.0, 60.0).log);
    }
}
