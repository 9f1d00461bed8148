//! The cosine distance operator on real[]: `a <=> b` = 1 - cos(a, b).
//! The index orders by it; a sequential scan computes it exactly. Both read
//! a vector with the same check (`vector::floats_of`), so the operator
//! refuses what the index refuses (2-D arrays, NULL elements).

use super::vector;
use crate::engine::ivf::cosine::cosine_distance;
use pgrx::prelude::*;

/// Cosine distance of two real[] vectors (1 - cosine similarity), in [0, 2].
/// A dimension mismatch, a non-finite value, an all-zero vector or an array
/// that is not one-dimensional is an ERROR.
#[pg_extern(immutable, strict, parallel_safe)]
fn inf_cosine_distance(a: Array<'_, f32>, b: Array<'_, f32>) -> f64 {
    // The arrays live in this call's memory context; the slices end with it.
    let a = unsafe { vector::floats_of(a.into_array_type().cast_mut(), "the left vector") };
    let b = unsafe { vector::floats_of(b.into_array_type().cast_mut(), "the right vector") };
    if a.len() != b.len() {
        crate::pg::errors::raise_with(
            PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
            format!("vectors of {} and {} dimensions cannot be compared", a.len(), b.len()),
            "compare vectors made by one model",
        );
    }
    vector::check_direction(a, "the left vector");
    vector::check_direction(b, "the right vector");
    cosine_distance(a, b).expect("finite vectors with a direction (checked)")
}
