//! `report.png`: loss and accuracy curves per epoch and the confusion matrix.

use std::sync::OnceLock;

use hone_crds::contract::EpochMetrics;
use plotters::prelude::*;

const WIDTH: u32 = 1500;
const HEIGHT: u32 = 500;
/// Where fonts for labels are looked for (Debian's fonts-dejavu-core), after `HONE_REPORT_FONT`.
const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Registers a TrueType font for labels once; false when none is found
/// (the report is then drawn without text).
fn font_available() -> bool {
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
        let candidates =
            std::env::var("HONE_REPORT_FONT").into_iter().chain(FONT_PATHS.iter().map(|p| (*p).to_owned()));
        for path in candidates {
            if let Ok(bytes) = std::fs::read(&path) {
                // plotters keeps fonts for the life of the process.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

type DrawResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Renders the report as PNG bytes.
pub fn render(
    history: &[EpochMetrics],
    classes: &[String],
    labels: &[i64],
    predictions: &[i64],
) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let text = font_available();
    let mut rgb = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        let panels = root.split_evenly((1, 3));
        let epochs: Vec<f64> = history.iter().map(|m| f64::from(m.epoch)).collect();
        let series = |f: fn(&EpochMetrics) -> f64| history.iter().map(f).collect::<Vec<f64>>();
        curves(
            &panels[0],
            "loss",
            &epochs,
            &[("train", series(|m| m.train_loss), BLUE), ("validation", series(|m| m.val_loss), RED)],
            text,
        )?;
        curves(
            &panels[1],
            "accuracy",
            &epochs,
            &[("train", series(|m| m.train_accuracy), BLUE), ("validation", series(|m| m.val_accuracy), RED)],
            text,
        )?;
        confusion(&panels[2], classes, labels, predictions, text)?;
        root.present()?;
    }
    let img = image::RgbImage::from_raw(WIDTH, HEIGHT, rgb).ok_or("report buffer has the wrong size")?;
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
    Ok(png)
}

fn curves<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    epochs: &[f64],
    lines: &[(&str, Vec<f64>, RGBColor)],
    text: bool,
) -> DrawResult<()>
where
    DB::ErrorType: 'static,
{
    let finite = lines.iter().flat_map(|(_, v, _)| v.iter().copied()).filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if lo <= hi { (lo.min(0.0), hi * 1.05 + 1e-9) } else { (0.0, 1.0) };
    let x_max = epochs.last().copied().unwrap_or(1.0).max(1.0);
    let mut builder = ChartBuilder::on(area);
    builder.margin(15);
    if text {
        builder.caption(title, ("sans-serif", 22)).x_label_area_size(35).y_label_area_size(50);
    }
    let mut chart = builder.build_cartesian_2d(1.0..x_max, lo..hi)?;
    if text {
        chart.configure_mesh().x_desc("epoch").draw()?;
    }
    for (name, values, color) in lines {
        let points = epochs.iter().copied().zip(values.iter().copied()).filter(|(_, v)| v.is_finite());
        let drawn = chart.draw_series(LineSeries::new(points, color.stroke_width(2)))?;
        if text {
            drawn
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
    }
    if text {
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    }
    Ok(())
}

fn confusion<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    classes: &[String],
    labels: &[i64],
    predictions: &[i64],
    text: bool,
) -> DrawResult<()>
where
    DB::ErrorType: 'static,
{
    let n = classes.len().max(1);
    let mut counts = vec![vec![0u32; n]; n];
    for (&l, &p) in labels.iter().zip(predictions) {
        if let Some(cell) = counts.get_mut(l as usize).and_then(|row| row.get_mut(p as usize)) {
            *cell += 1;
        }
    }
    let max = counts.iter().flatten().copied().max().unwrap_or(1).max(1);
    let mut builder = ChartBuilder::on(area);
    builder.margin(15);
    if text {
        builder.caption("confusion matrix (rows: true, columns: predicted)", ("sans-serif", 18));
    }
    let mut chart = builder.build_cartesian_2d(0..n, 0..n)?;
    chart.draw_series(counts.iter().enumerate().flat_map(|(row, cols)| {
        cols.iter().enumerate().map(move |(col, &c)| {
            let shade = 255 - (f64::from(c) / f64::from(max) * 200.0) as u8;
            // Row 0 at the top.
            Rectangle::new([(col, n - 1 - row), (col + 1, n - row)], RGBColor(shade, shade, 255).filled())
        })
    }))?;
    if text && n <= 20 {
        chart.draw_series(counts.iter().enumerate().flat_map(|(row, cols)| {
            cols.iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(move |(col, c)| Text::new(c.to_string(), (col, n - row), ("sans-serif", 14).into_font()))
        }))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_png() {
        let history: Vec<EpochMetrics> = (1..=3)
            .map(|e| EpochMetrics {
                epoch: e,
                train_loss: 1.0 / f64::from(e),
                train_accuracy: 0.5 + 0.1 * f64::from(e),
                val_loss: 1.2 / f64::from(e),
                val_accuracy: 0.45 + 0.1 * f64::from(e),
                learning_rate: 0.01,
                samples_per_second: 100.0,
                allreduce_ms_per_step: None,
            })
            .collect();
        let classes = vec!["a".to_owned(), "b".to_owned()];
        let png = render(&history, &classes, &[0, 1, 1, 0], &[0, 1, 0, 0]).unwrap();
        let img = image::load_from_memory(&png).unwrap();
        assert_eq!((img.width(), img.height()), (WIDTH, HEIGHT));
    }
}
