//! Drawing for `zo-hpc report`: a figure is a grid of panels, a panel a set of
//! (x, y) series on linear or logarithmic x, written as one PNG of a fixed size.
//! Text goes through ab_glyph, which has no font of its own: `register_font` loads
//! a TTF from disk once per process.
use super::error::ReportError;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Every PNG's size in pixels (fixed, so a reader can lay them out side by side).
pub const SIZE: (u32, u32) = (1200, 800);

/// Where a TTF is looked for, after the environment variable.
const FONT_ENV: &str = "ZO_HPC_FONT";
const FONT_PATHS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];
const FONT: &str = "sans-serif";

/// Matplotlib's "tab10": distinct on white, also for readers with weak colour vision.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Look {
    /// A solid line (many points: steps).
    Line,
    /// A thin, light line behind its smoothed version.
    Faint,
    /// A dashed reference line (theory, baseline).
    Dashed,
    /// A line with a marker at every point (few points: epochs, radii).
    Marked,
    /// Filled dots, no line (one value per seed).
    Dots,
}

pub struct Series {
    /// Legend entry; empty for none.
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub look: Look,
    /// Index into the palette.
    pub color: usize,
}

pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    /// Names of the whole y values 1, 2, …: a categorical y axis (empty: numeric).
    pub y_names: Vec<String>,
    pub series: Vec<Series>,
}

impl Panel {
    pub fn new(title: &str, x_label: &str, y_label: &str) -> Panel {
        Panel {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            log_x: false,
            y_names: Vec::new(),
            series: Vec::new(),
        }
    }

    /// The points of `s` that can be drawn: finite, and x > 0 on a log axis.
    fn points<'s>(&self, s: &'s Series) -> impl Iterator<Item = (f64, f64)> + 's {
        let log_x = self.log_x;
        s.points
            .iter()
            .copied()
            .filter(move |(x, y)| x.is_finite() && y.is_finite() && (!log_x || *x > 0.0))
    }

    /// How many points of `s` can be drawn.
    pub fn drawable(&self, s: &Series) -> usize {
        self.points(s).count()
    }

    pub fn has_data(&self) -> bool {
        self.series.iter().any(|s| self.drawable(s) > 0)
    }
}

/// Registers the first TTF found (`ZO_HPC_FONT`, then the Debian and Arch paths of
/// DejaVu Sans) as plotters' sans-serif font. Call once before drawing.
pub fn register_font() -> Result<PathBuf, ReportError> {
    let candidates: Vec<PathBuf> = std::env::var_os(FONT_ENV)
        .map(PathBuf::from)
        .into_iter()
        .chain(FONT_PATHS.iter().map(PathBuf::from))
        .collect();
    let Some(path) = candidates.iter().find(|p| p.is_file()) else {
        return Err(ReportError::NoFont {
            tried: candidates,
            env: FONT_ENV,
        });
    };
    let bytes = std::fs::read(path).map_err(|source| ReportError::Io {
        path: path.clone(),
        source,
    })?;
    // plotters keeps fonts for the life of the process; the report registers one.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font(FONT, FontStyle::Normal, bytes)
        .map_err(|_| ReportError::BadFont(path.clone()))?;
    Ok(path.clone())
}

/// Draws `panels` in a grid under `title` into the PNG `path`.
pub fn draw(path: &Path, title: &str, panels: &[Panel]) -> Result<(), ReportError> {
    let err = |e: String| ReportError::Plot {
        file: path.to_path_buf(),
        message: e,
    };
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let body = root
        .titled(title, (FONT, 26))
        .map_err(|e| err(e.to_string()))?;
    let cols = match panels.len() {
        0 | 1 => 1,
        2..=4 => 2,
        _ => 3,
    };
    let rows = panels.len().div_ceil(cols).max(1);
    for (area, p) in body.split_evenly((rows, cols)).iter().zip(panels) {
        draw_panel(area, p).map_err(err)?;
    }
    root.present().map_err(|e| err(e.to_string()))
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

fn draw_panel(area: &Area, p: &Panel) -> Result<(), String> {
    let pts: Vec<(f64, f64)> = p.series.iter().flat_map(|s| p.points(s)).collect();
    if pts.is_empty() {
        let style = TextStyle::from((FONT, 18).into_font()).color(&BLACK);
        return area
            .draw_text(&format!("{}: no data", p.title), &style, (20, 20))
            .map_err(|e| e.to_string());
    }
    let (xs, ys): (Vec<f64>, Vec<f64>) = pts.into_iter().unzip();
    // Steps, epochs, q: no tick between two whole numbers gets a label.
    let whole = xs.iter().all(|x| x.fract() == 0.0);
    let x = padded(&xs, p.log_x);
    let y = if p.y_names.is_empty() {
        padded(&ys, false)
    } else {
        0.5..p.y_names.len() as f64 + 0.5
    };
    if p.log_x {
        chart(area, p, x.log_scale(), y, whole)
    } else {
        chart(area, p, x, y, whole)
    }
}

/// The range of `v` with some room (a single value gets a window around it).
fn padded(v: &[f64], log: bool) -> Range<f64> {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if log {
        return lo / 1.5..hi * 1.5;
    }
    let pad = if hi > lo {
        0.05 * (hi - lo)
    } else {
        0.1 * lo.abs().max(1e-3)
    };
    lo - pad..hi + pad
}

fn chart<X>(area: &Area, p: &Panel, x: X, y: Range<f64>, whole_x: bool) -> Result<(), String>
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    let e = |e: plotters::drawing::DrawingAreaErrorKind<_>| e.to_string();
    let whole = |v: &f64| {
        if v.fract() == 0.0 {
            tick(v)
        } else {
            String::new()
        }
    };
    let named = |v: &f64| y_name(&p.y_names, *v);
    let mut c = ChartBuilder::on(area)
        .caption(&p.title, (FONT, 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(label_room(&p.y_names))
        .build_cartesian_2d(x, y)
        .map_err(e)?;
    c.configure_mesh()
        .x_labels(6)
        .y_labels(if p.y_names.is_empty() {
            8
        } else {
            2 * p.y_names.len() + 1
        })
        .x_label_formatter(if whole_x { &whole } else { &tick })
        .y_label_formatter(if p.y_names.is_empty() { &tick } else { &named })
        .x_desc(p.x_label.as_str())
        .y_desc(p.y_label.as_str())
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(e)?;
    let mut legend = false;
    for s in &p.series {
        let pts: Vec<(f64, f64)> = p.points(s).collect();
        let color = PALETTE[s.color % PALETTE.len()];
        let style = match s.look {
            Look::Faint => color.mix(0.25).stroke_width(1),
            _ => color.stroke_width(2),
        };
        let anno = match s.look {
            Look::Dashed => c
                .draw_series(DashedLineSeries::new(pts, 8, 6, style))
                .map_err(e)?,
            Look::Marked => c
                .draw_series(LineSeries::new(pts, style).point_size(3))
                .map_err(e)?,
            Look::Line | Look::Faint => c.draw_series(LineSeries::new(pts, style)).map_err(e)?,
            Look::Dots => c
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled())))
                .map_err(e)?,
        };
        if !s.label.is_empty() {
            legend = true;
            anno.label(s.label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
    }
    if legend {
        c.configure_series_labels()
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.3))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(e)?;
    }
    Ok(())
}

/// Pixels left of the plot for the y tick labels: room for the longest name.
fn label_room(names: &[String]) -> u32 {
    let longest = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    (8 * longest as u32 + 16).clamp(70, 400)
}

/// The name of a categorical axis' whole value `v` (1-based); empty elsewhere.
fn y_name(names: &[String], v: f64) -> String {
    if v.fract() != 0.0 || v < 1.0 {
        return String::new();
    }
    names.get(v as usize - 1).cloned().unwrap_or_default()
}

/// A tick label: short, without trailing zeros; tiny or huge values in e-notation.
fn tick(v: &f64) -> String {
    let a = v.abs();
    let s = if a != 0.0 && !(1e-3..1e5).contains(&a) {
        format!("{v:.1e}").replace(".0e", "e")
    } else {
        format!("{v:.4}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    };
    if s == "-0" {
        "0".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_labels_are_short() {
        let t = |v: f64| tick(&v);
        assert_eq!(
            [t(200.0), t(0.25), t(1e-4), t(-0.0), t(2.5e6)],
            ["200", "0.25", "1e-4", "0", "2.5e6"]
        );
    }

    #[test]
    fn a_categorical_axis_names_whole_values_only() {
        let names = vec!["off".to_string(), "es".to_string()];
        let n = |v: f64| y_name(&names, v);
        assert_eq!(
            [n(1.0), n(2.0), n(1.5), n(0.0), n(3.0)],
            ["off", "es", "", "", ""]
        );
    }

    #[test]
    fn a_missing_font_names_the_variable_and_the_package() {
        let e = ReportError::NoFont {
            tried: vec![PathBuf::from("/x.ttf")],
            env: FONT_ENV,
        }
        .to_string();
        assert!(
            e.contains("/x.ttf") && e.contains("ZO_HPC_FONT") && e.contains("fonts-dejavu-core"),
            "{e}"
        );
    }
}
