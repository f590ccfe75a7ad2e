//! The short sweep of a peer's own options behind `--peers tuned`: one pass of coordinate
//! descent (each option in turn over its values, the others held at the best so far), each
//! point measured once. A point that ran a job twice, left one unrun or timed out cannot win.

use std::future::Future;

/// One option and the values tried for it.
#[derive(Debug, Clone, Copy)]
pub struct Axis {
    pub name: &'static str,
    pub values: &'static [u64],
}

/// What one point of the sweep measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    /// One value per axis, in axis order.
    pub point: Vec<u64>,
    pub jobs_per_s: f64,
    /// No duplicates, nothing missing, no timeout.
    pub clean: bool,
}

/// Every point tried, in order, and the winner.
#[derive(Debug, Clone)]
pub struct SweepResult {
    pub trials: Vec<Trial>,
    /// The fastest clean trial; None if no point was clean.
    pub best: Option<Trial>,
}

/// The fastest clean trial of `trials` (the first of equals); None if none is clean.
pub fn pick_best<'a>(trials: impl IntoIterator<Item = &'a Trial>) -> Option<&'a Trial> {
    trials
        .into_iter()
        .filter(|t| t.clean && t.jobs_per_s.is_finite())
        .fold(None, |best: Option<&Trial>, t| match best {
            Some(b) if b.jobs_per_s >= t.jobs_per_s => Some(b),
            _ => Some(t),
        })
}

/// Sweeps `axes` from `start` (one value per axis, not necessarily among the axis values):
/// measures `start`, then for each axis in order every value with the other axes at the best
/// point so far, moving to the fastest clean point of that line. `measure` returns
/// (jobs/s, clean) for a point and is called at most once per point.
pub async fn coordinate_descent<F, Fut, E>(
    axes: &[Axis],
    start: &[u64],
    mut measure: F,
) -> Result<SweepResult, E>
where
    F: FnMut(Vec<u64>) -> Fut,
    Fut: Future<Output = Result<(f64, bool), E>>,
{
    assert_eq!(axes.len(), start.len(), "one start value per axis");
    let mut trials: Vec<Trial> = Vec::new();
    let mut current = start.to_vec();
    let first = measure_at(current.clone(), &mut trials, &mut measure).await?;
    let mut current_i = first;
    for (a, axis) in axes.iter().enumerate() {
        let mut line = vec![current_i];
        for &v in axis.values {
            let mut p = current.clone();
            p[a] = v;
            line.push(measure_at(p, &mut trials, &mut measure).await?);
        }
        if let Some(b) = pick_best(line.iter().map(|&i| &trials[i])) {
            current = b.point.clone();
            current_i = line
                .iter()
                .copied()
                .find(|&i| trials[i].point == current)
                .expect("the best of a line is on it");
        }
    }
    let best = pick_best(&trials).cloned();
    Ok(SweepResult { trials, best })
}

/// The index in `trials` of point `p`, measuring it first if it was never measured.
async fn measure_at<F, Fut, E>(p: Vec<u64>, trials: &mut Vec<Trial>, measure: &mut F) -> Result<usize, E>
where
    F: FnMut(Vec<u64>) -> Fut,
    Fut: Future<Output = Result<(f64, bool), E>>,
{
    if let Some(i) = trials.iter().position(|t| t.point == p) {
        return Ok(i);
    }
    let (jobs_per_s, clean) = measure(p.clone()).await?;
    trials.push(Trial {
        point: p,
        jobs_per_s,
        clean,
    });
    Ok(trials.len() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use std::convert::Infallible;

    const AXES: [Axis; 2] = [
        Axis {
            name: "a",
            values: &[1, 2, 3],
        },
        Axis {
            name: "b",
            values: &[10, 20],
        },
    ];

    fn trial(point: &[u64], jobs_per_s: f64, clean: bool) -> Trial {
        Trial {
            point: point.to_vec(),
            jobs_per_s,
            clean,
        }
    }

    #[test]
    fn best_skips_unclean_and_nan() {
        let t = [
            trial(&[1], 100.0, true),
            trial(&[2], 900.0, false),
            trial(&[3], f64::NAN, true),
            trial(&[4], 200.0, true),
        ];
        assert_eq!(pick_best(&t).unwrap().point, vec![4]);
        assert!(pick_best(&t[1..2]).is_none());
    }

    #[test]
    fn best_keeps_the_first_of_equals() {
        let t = [trial(&[1], 5.0, true), trial(&[2], 5.0, true)];
        assert_eq!(pick_best(&t).unwrap().point, vec![1]);
    }

    #[test]
    fn descent_finds_a_separable_optimum_measuring_each_point_once() {
        let mut calls = Vec::new();
        // Peak at a = 2, b = 20.
        let score = |p: &[u64]| 100.0 - (p[0] as f64 - 2.0).abs() * 10.0 - (20.0 - p[1] as f64);
        let r = block_on(coordinate_descent(&AXES, &[3, 10], |p| {
            calls.push(p.clone());
            let s = score(&p);
            async move { Ok::<_, Infallible>((s, true)) }
        }))
        .unwrap();
        assert_eq!(r.best.unwrap().point, vec![2, 20]);
        // start [3,10]; a-line adds [1,10],[2,10]; b-line from [2,10] adds [2,20].
        assert_eq!(calls, vec![vec![3, 10], vec![1, 10], vec![2, 10], vec![2, 20]]);
        assert_eq!(r.trials.len(), calls.len());
    }

    #[test]
    fn an_unclean_point_never_wins_however_fast() {
        let r = block_on(coordinate_descent(&AXES, &[1, 10], |p| {
            // a = 3 is fastest but loses jobs.
            let out = if p[0] == 3 {
                (1e9, false)
            } else {
                (p[0] as f64 + p[1] as f64, true)
            };
            async move { Ok::<_, Infallible>(out) }
        }))
        .unwrap();
        assert_eq!(r.best.unwrap().point, vec![2, 20]);
        assert!(r.trials.iter().any(|t| t.point == vec![3, 10] && !t.clean));
    }

    #[test]
    fn no_clean_point_gives_no_winner() {
        let r = block_on(coordinate_descent(&AXES, &[1, 10], |_| async {
            Ok::<_, Infallible>((1.0, false))
        }))
        .unwrap();
        assert!(r.best.is_none());
        assert_eq!(r.trials.len(), 1 + 2 + 1);
    }

    #[test]
    fn a_measurement_error_stops_the_sweep() {
        let mut n = 0;
        let r = block_on(coordinate_descent(&AXES, &[1, 10], |_| {
            n += 1;
            let fail = n == 2;
            async move {
                if fail {
                    Err("database gone")
                } else {
                    Ok((1.0, true))
                }
            }
        }));
        assert_eq!(r.unwrap_err(), "database gone");
        assert_eq!(n, 2);
    }
}
