//! The metrics every proxied request updates — its status counter and its
//! two latency histograms — kept as one set of cells per worker and summed
//! only when `/metrics` is read. A cell one worker writes stays in that
//! core's cache: a single shared cell (or prometheus-client's histogram,
//! a lock around its buckets) is one cache line every request on every
//! core takes from the others, twice per update.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::family::MetricConstructor;
use prometheus_client::metrics::{MetricType, TypedMetric};

use crate::worker::PerWorker;

/// A counter with a cell per worker.
#[derive(Clone)]
pub(super) struct WorkerCounter(Arc<PerWorker<AtomicU64>>);

impl WorkerCounter {
    pub(super) fn new(workers: usize) -> Self {
        Self(Arc::new(PerWorker::new(workers, AtomicU64::default)))
    }

    pub(super) fn inc(&self) {
        self.0.mine().fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn get(&self) -> u64 {
        self.0.iter().map(|cell| cell.load(Ordering::Relaxed)).sum()
    }
}

impl std::fmt::Debug for WorkerCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("WorkerCounter").field(&self.get()).finish()
    }
}

/// Builds a family's counters, each with a cell per worker.
#[derive(Clone, Copy)]
pub(super) struct CountersOf {
    pub(super) workers: usize,
}

impl MetricConstructor<WorkerCounter> for CountersOf {
    fn new_metric(&self) -> WorkerCounter {
        WorkerCounter::new(self.workers)
    }
}

impl TypedMetric for WorkerCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for WorkerCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Upper bounds of a histogram's buckets, in seconds, ascending.
pub(super) type Bounds = &'static [f64];

/// One worker's buckets: a count per bound plus one above the last, and the
/// sum of what was observed in nanoseconds (an integer, so it can be added
/// atomically; 2^64 ns is 584 years of latency).
#[derive(Default)]
struct Cells {
    buckets: [AtomicU64; MAX_BUCKETS + 1],
    sum_nanos: AtomicU64,
}

/// The most bounds a [`WorkerHistogram`] takes.
pub(super) const MAX_BUCKETS: usize = 15;

/// A latency histogram with a set of buckets per worker.
#[derive(Clone)]
pub(super) struct WorkerHistogram {
    /// Bounds in nanoseconds, so an observation is placed without floats.
    bounds_nanos: Arc<[u64]>,
    bounds: Bounds,
    cells: Arc<PerWorker<Cells>>,
}

impl WorkerHistogram {
    /// Bounds past [`MAX_BUCKETS`] are dropped; not-finite ones are skipped.
    pub(super) fn new(bounds: Bounds, workers: usize) -> Self {
        debug_assert!(bounds.len() <= MAX_BUCKETS, "{} bounds", bounds.len());
        let bounds = bounds.get(..MAX_BUCKETS).unwrap_or(bounds);
        Self {
            bounds_nanos: bounds.iter().map(|s| seconds_to_nanos(*s)).collect(),
            bounds,
            cells: Arc::new(PerWorker::new(workers, Cells::default)),
        }
    }

    pub(super) fn observe(&self, value: Duration) {
        let cells = self.cells.mine();
        let nanos = u64::try_from(value.as_nanos()).unwrap_or(u64::MAX);
        let bucket = self.bounds_nanos.partition_point(|&bound| bound < nanos);
        if let Some(count) = cells.buckets.get(bucket) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        cells.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Each bucket's own count (not cumulative), `+Inf` last, and the sum
    /// in seconds, over every worker.
    fn snapshot(&self) -> (Vec<(f64, u64)>, f64) {
        let upper = self.bounds.iter().copied().chain([f64::INFINITY]);
        let mut buckets: Vec<(f64, u64)> = upper.map(|bound| (bound, 0)).collect();
        let mut sum_nanos: u64 = 0;
        for cells in self.cells.iter() {
            for ((_, total), count) in buckets.iter_mut().zip(&cells.buckets) {
                *total += count.load(Ordering::Relaxed);
            }
            sum_nanos = sum_nanos.wrapping_add(cells.sum_nanos.load(Ordering::Relaxed));
        }
        (buckets, Duration::from_nanos(sum_nanos).as_secs_f64())
    }
}

impl std::fmt::Debug for WorkerHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (buckets, sum) = self.snapshot();
        f.debug_struct("WorkerHistogram")
            .field("buckets", &buckets)
            .field("sum", &sum)
            .finish()
    }
}

/// Builds a family's histograms, each with a set of buckets per worker.
#[derive(Clone, Copy)]
pub(super) struct HistogramsOf {
    pub(super) bounds: Bounds,
    pub(super) workers: usize,
}

impl MetricConstructor<WorkerHistogram> for HistogramsOf {
    fn new_metric(&self) -> WorkerHistogram {
        WorkerHistogram::new(self.bounds, self.workers)
    }
}

fn seconds_to_nanos(seconds: f64) -> u64 {
    if seconds.is_finite() && seconds > 0.0 {
        Duration::try_from_secs_f64(seconds).map_or(u64::MAX, |d| {
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
        })
    } else {
        0
    }
}

impl TypedMetric for WorkerHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for WorkerHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (buckets, sum) = self.snapshot();
        let count = buckets.iter().map(|(_, count)| count).sum();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: Bounds = &[0.001, 0.01];

    #[test]
    fn observations_of_every_worker_are_summed_into_their_buckets() {
        let histogram = WorkerHistogram::new(BOUNDS, 3);
        let observe_on = |worker: usize, value: Duration| {
            let histogram = histogram.clone();
            std::thread::spawn(move || {
                crate::worker::enter(worker);
                histogram.observe(value);
            })
            .join()
            .unwrap();
        };
        observe_on(0, Duration::from_micros(500));
        // Exactly on a bound counts in that bound's bucket (`le`).
        observe_on(1, Duration::from_millis(1));
        observe_on(2, Duration::from_millis(5));
        // A worker past the cells counts in the first.
        observe_on(7, Duration::from_secs(2));
        let (buckets, sum) = histogram.snapshot();
        assert_eq!(buckets, vec![(0.001, 2), (0.01, 1), (f64::INFINITY, 1)]);
        assert!((sum - 2.0065).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn a_counter_sums_its_workers() {
        let counter = WorkerCounter::new(2);
        for worker in [0, 1, 1, 5] {
            let counter = counter.clone();
            std::thread::spawn(move || {
                crate::worker::enter(worker);
                counter.inc();
            })
            .join()
            .unwrap();
        }
        assert_eq!(counter.get(), 4);
    }
}
