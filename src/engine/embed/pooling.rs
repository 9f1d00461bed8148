//! Pooling of token states into one vector, and L2 normalisation.

use crate::engine::error::{EngineError, EngineResult};
use std::ops::Range;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Pooling {
    /// Average of the token states under the attention mask.
    Mean,
    /// The first token's state ([CLS]).
    Cls,
    /// The last non-padding token's state (decoder-style embedders).
    LastToken,
}

impl Pooling {
    pub fn name(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::LastToken => "last",
        }
    }

    pub fn parse(s: &str) -> EngineResult<Self> {
        match s {
            "mean" => Ok(Pooling::Mean),
            "cls" => Ok(Pooling::Cls),
            "last" => Ok(Pooling::LastToken),
            other => Err(EngineError::invalid(format!("unknown pooling {other:?}"))
                .with_hint("pooling is one of 'mean', 'cls', 'last'")),
        }
    }

    /// Pool one sequence. `states` is `[seq, hidden]` row-major, `real` the
    /// rows that hold real (unpadded) tokens: first on the right-padded
    /// side, last on the left; never empty.
    pub fn pool(self, states: &[f32], hidden: usize, real: Range<usize>, out: &mut [f32]) {
        debug_assert_eq!(out.len(), hidden);
        debug_assert!(!real.is_empty());
        let len = real.len();
        let (first, last) = (real.start, real.end - 1);
        match self {
            Pooling::Cls => out.copy_from_slice(&states[first * hidden..(first + 1) * hidden]),
            Pooling::LastToken => out.copy_from_slice(&states[last * hidden..(last + 1) * hidden]),
            Pooling::Mean => {
                out.fill(0.0);
                for row in states[first * hidden..(last + 1) * hidden].chunks_exact(hidden) {
                    for (o, v) in out.iter_mut().zip(row) {
                        *o += *v;
                    }
                }
                let inv = 1.0 / len as f32;
                out.iter_mut().for_each(|o| *o *= inv);
            }
        }
    }
}

/// Scale to unit length; a zero vector stays zero rather than becoming NaN.
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| (*x as f64) * (*x as f64)).sum::<f64>().sqrt();
    if norm > 0.0 {
        let inv = (1.0 / norm) as f32;
        v.iter_mut().for_each(|x| *x *= inv);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATES: [f32; 6] = [1.0, 2.0, 3.0, 4.0, 100.0, 100.0]; // 3 tokens x 2 dims, last is padding

    #[test]
    fn mean_ignores_padding() {
        let mut out = [0.0; 2];
        Pooling::Mean.pool(&STATES, 2, 0..2, &mut out);
        assert_eq!(out, [2.0, 3.0]);
        // Left padding: the real tokens are the last rows.
        Pooling::Mean.pool(&STATES, 2, 1..3, &mut out);
        assert_eq!(out, [51.5, 52.0]);
    }

    #[test]
    fn cls_and_last_token() {
        let mut out = [0.0; 2];
        Pooling::Cls.pool(&STATES, 2, 0..2, &mut out);
        assert_eq!(out, [1.0, 2.0]);
        Pooling::LastToken.pool(&STATES, 2, 0..2, &mut out);
        assert_eq!(out, [3.0, 4.0]);
        Pooling::Cls.pool(&STATES, 2, 1..3, &mut out);
        assert_eq!(out, [3.0, 4.0]);
        Pooling::LastToken.pool(&STATES, 2, 1..3, &mut out);
        assert_eq!(out, [100.0, 100.0]);
    }

    #[test]
    fn normalize_unit_and_zero() {
        let mut v = [3.0, 4.0];
        l2_normalize(&mut v);
        assert_eq!(v, [0.6, 0.8]);
        let mut z = [0.0, 0.0];
        l2_normalize(&mut z);
        assert_eq!(z, [0.0, 0.0]);
    }

    #[test]
    fn names_round_trip() {
        for p in [Pooling::Mean, Pooling::Cls, Pooling::LastToken] {
            assert_eq!(Pooling::parse(p.name()).unwrap(), p);
        }
        assert!(Pooling::parse("max").is_err());
    }
}
