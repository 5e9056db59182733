//! Writes two sample charts (a linear one and a log-latency one) as SVG and PNG into the
//! directory given as the first argument (default: the system temp dir), to look at.
use std::path::PathBuf;

use wedsync_plot::{Chart, LineStyle, Marker, PlotError, Series, Span, write};

fn main() -> Result<(), PlotError> {
    let dir = std::env::args().nth(1).map_or_else(std::env::temp_dir, PathBuf::from);
    let minutes = 0..=24 * 60;
    let demand: Vec<(f64, f64)> = minutes
        .clone()
        .map(|m| {
            let t = f64::from(m);
            let spike = if m == 700 { 900.0 } else { 0.0 };
            (t, 300.0 + 250.0 * (t / 180.0).sin().max(0.0) + 20.0 * (t / 7.0).sin() + spike)
        })
        .collect();
    let chart = Chart {
        title: "eu-west: requests during a wedding Saturday".to_owned(),
        x_label: "minutes since start".to_owned(),
        y_label: "requests/s".to_owned(),
        log_y: false,
        series: vec![
            Series { name: "demand".to_owned(), points: demand, style: LineStyle::Solid },
            Series {
                name: "capacity".to_owned(),
                points: vec![(0.0, 400.0), (120.0, 600.0), (600.0, 800.0), (900.0, 500.0)],
                style: LineStyle::Step,
            },
            Series {
                name: "last week".to_owned(),
                points: vec![(0.0, 320.0), (1440.0, 320.0)],
                style: LineStyle::Dashed,
            },
        ],
        markers: vec![
            Marker { x: 120.0, label: "scale up to 6".to_owned() },
            Marker { x: 600.0, label: "scale up to 8".to_owned() },
            Marker { x: 900.0, label: "scale down to 5".to_owned() },
        ],
        ticks: Vec::new(),
        spans: vec![
            Span { from: 300.0, to: 420.0, label: "region outage".to_owned() },
            Span { from: 660.0, to: 840.0, label: "wedding: Smith & Jones".to_owned() },
        ],
    };
    let (svg, png) = write(&chart, &dir.join("wedsync-plot-demo"))?;
    println!("{}\n{}", svg.display(), png.display());

    let latency = Chart {
        title: "p50 / p99 latency".to_owned(),
        x_label: "minutes since start".to_owned(),
        y_label: "ms".to_owned(),
        log_y: true,
        series: vec![
            Series {
                name: "p99".to_owned(),
                points: minutes
                    .clone()
                    .map(|m| {
                        (
                            f64::from(m),
                            40.0 + 30.0 * (f64::from(m) / 50.0).sin().abs()
                                + if (300..420).contains(&m) { 900.0 } else { 0.0 },
                        )
                    })
                    .collect(),
                style: LineStyle::Solid,
            },
            Series {
                name: "p50".to_owned(),
                points: minutes.map(|m| (f64::from(m), 4.0 + 2.0 * (f64::from(m) / 40.0).cos().abs())).collect(),
                style: LineStyle::Solid,
            },
        ],
        markers: vec![],
        spans: vec![Span { from: 300.0, to: 420.0, label: "region outage".to_owned() }],
        ticks: Vec::new(),
    };
    let (svg, png) = write(&latency, &dir.join("wedsync-plot-demo-latency"))?;
    println!("{}\n{}", svg.display(), png.display());
    Ok(())
}
