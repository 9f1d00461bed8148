//! The cosine distance operator on real[]: `a <=> b` = 1 - cos(a, b).
//! The index orders by it; a sequential scan computes it exactly.

use super::vector;
use crate::engine::simd::dot;
use pgrx::prelude::*;

/// Cosine distance of two real[] vectors (1 - cosine similarity). A
/// dimension mismatch, a non-finite value or an all-zero vector is an ERROR.
#[pg_extern(immutable, strict, parallel_safe)]
fn inf_cosine_distance(a: Array<'_, f32>, b: Array<'_, f32>) -> f64 {
    let a = slice(&a, "the left vector");
    let b = slice(&b, "the right vector");
    if a.len() != b.len() {
        crate::pg::errors::raise_with(
            PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
            format!("vectors of {} and {} dimensions cannot be compared", a.len(), b.len()),
            "compare vectors made by one model",
        );
    }
    let (na, nb) = (
        vector::check_direction(a, "the left vector"),
        vector::check_direction(b, "the right vector"),
    );
    1.0 - (dot(a, b) as f64 / (na * nb))
}

fn slice<'a>(array: &'a Array<'_, f32>, what: &str) -> &'a [f32] {
    array.as_slice().unwrap_or_else(|_| {
        crate::pg::errors::raise_with(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("{what} contains NULL elements"),
            "a vector needs a number in every dimension",
        )
    })
}
