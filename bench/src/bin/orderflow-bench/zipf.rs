//! Zipf-distributed picks over ranks `0..n`: rank `k` (from 0) is chosen
//! with probability proportional to `1 / (k + 1)^s`. The cumulative weights
//! are computed once; a pick is a binary search.

pub struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, exponent: f64) -> Zipf {
        let mut total = 0.0;
        let mut cumulative = Vec::with_capacity(n.max(1));
        for k in 0..n.max(1) {
            total += 1.0 / ((k + 1) as f64).powf(exponent);
            cumulative.push(total);
        }
        for c in &mut cumulative {
            *c /= total;
        }
        Zipf { cumulative }
    }

    /// The rank for `u`, a uniform draw from `[0, 1)`.
    pub fn sample(&self, u: f64) -> usize {
        self.cumulative
            .partition_point(|&c| c <= u)
            .min(self.cumulative.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_follow_the_harmonic_weights() {
        let zipf = Zipf::new(4, 1.0);
        // Weights 1, 1/2, 1/3, 1/4 over 25/12: 0.48, 0.24, 0.16, 0.12.
        let mut counts = [0usize; 4];
        let draws = 100_000;
        for i in 0..draws {
            counts[zipf.sample((i as f64 + 0.5) / draws as f64)] += 1;
        }
        let shares: Vec<f64> = counts.iter().map(|&c| c as f64 / draws as f64).collect();
        for (share, expected) in shares.iter().zip([0.48, 0.24, 0.16, 0.12]) {
            assert!((share - expected).abs() < 0.001, "{shares:?}");
        }
    }

    #[test]
    fn every_draw_is_a_valid_rank() {
        let zipf = Zipf::new(10_000, 1.1);
        assert_eq!(zipf.sample(0.0), 0);
        assert_eq!(zipf.sample(0.999_999_999_9), 9_999);
        assert!(zipf.sample(0.5) < 10_000);
        let one = Zipf::new(1, 1.0);
        assert_eq!(one.sample(0.99), 0);
    }
}
