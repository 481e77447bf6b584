//! `histogram_quantile(φ, buckets)`: the buckets reduced per histogram (their labels
//! without `le`), with the ad hoc evaluator's own `bucket_quantile`.

use vigil_queries::promql::{bucket_quantile, parse_go_float, Bucket};

use super::Rows;
use crate::incremental::Element;

pub(super) fn quantile<'scope>(phi: f64, input: Rows<'scope>) -> Rows<'scope> {
    input
        .flat_map(|row: Element| {
            // Buckets without a parsable `le` are left out (the ad hoc path warns).
            let upper = parse_go_float(row.labels.get("le")?)?;
            let mut histogram = row.labels;
            histogram.set("le", "");
            Some((histogram, (upper.to_bits(), row.bits)))
        })
        .reduce(move |histogram, input: &[(&(u64, u64), isize)], output| {
            let mut buckets = Vec::with_capacity(input.len());
            for ((upper, count), copies) in input {
                for _ in 0..(*copies).max(0) {
                    buckets.push(Bucket {
                        upper_bound: f64::from_bits(*upper),
                        count: f64::from_bits(*count),
                    });
                }
            }
            let (value, _fixes) = bucket_quantile(phi, buckets);
            output.push((
                Element {
                    labels: histogram.clone(),
                    drop_name: true,
                    bits: value.to_bits(),
                },
                1isize,
            ));
        })
        .map(|(_histogram, row)| row)
}
