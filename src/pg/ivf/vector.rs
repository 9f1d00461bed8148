//! real[] datums as float slices, checked: one dimension, no NULLs, finite.

use crate::pg::errors::raise_with;
use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;

/// Call `f` with the floats of a real[] datum; a detoasted copy is freed
/// afterwards, so scans over many rows do not grow memory. `what` names the
/// value in errors.
pub unsafe fn with_floats<T>(datum: pg_sys::Datum, what: &str, f: impl FnOnce(&[f32]) -> T) -> T {
    let original = datum.cast_mut_ptr::<pg_sys::varlena>();
    let detoasted = pg_sys::pg_detoast_datum(original);
    let result = f(floats_of(detoasted as *mut pg_sys::ArrayType, what));
    if detoasted != original {
        pg_sys::pfree(detoasted.cast());
    }
    result
}

/// The floats of a detoasted real[]; an ERROR unless it is one-dimensional
/// with no NULLs.
pub unsafe fn floats_of<'a>(array: *mut pg_sys::ArrayType, what: &str) -> &'a [f32] {
    let ndim = (*array).ndim;
    if ndim == 0 {
        return &[];
    }
    if ndim != 1 {
        raise_with(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("{what} has {ndim} dimensions; a vector is a one-dimensional real[]"),
            "pass a flat array, e.g. ARRAY[0.1, 0.2]::real[] or inf_embed(...)",
        );
    }
    if (*array).elemtype != pg_sys::FLOAT4OID {
        raise_with(
            PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
            format!("{what} is not a real[]"),
            "cast it: ...::real[]",
        );
    }
    if (*array).dataoffset != 0 {
        raise_with(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("{what} contains NULL elements"),
            "a vector needs a number in every dimension",
        );
    }
    let header = std::mem::size_of::<pg_sys::ArrayType>() + 2 * std::mem::size_of::<i32>();
    let data_offset = (header + 7) & !7; // MAXALIGN
    let len = *((array as *const u8).add(std::mem::size_of::<pg_sys::ArrayType>()) as *const i32) as usize;
    std::slice::from_raw_parts((array as *const u8).add(data_offset) as *const f32, len)
}

/// Raise unless every value is finite and the vector is not all zeros;
/// returns its Euclidean norm.
pub fn check_direction(v: &[f32], what: &str) -> f64 {
    // SIMD sum of squares: finite and positive means every value is finite
    // and one is not zero. Otherwise find out why, in f64 (values near
    // f32::MAX square past it and are fine).
    let squares = crate::engine::simd::dot(v, v);
    if squares.is_finite() && squares > 0.0 {
        return (squares as f64).sqrt();
    }
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        raise_with(
            PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
            format!("{what} has a non-finite value ({}) at position {}", v[i], i + 1),
            "vectors must hold finite numbers; embed the text again with inf_embed(...)",
        );
    }
    let norm = v.iter().map(|x| (*x as f64) * (*x as f64)).sum::<f64>().sqrt();
    if norm == 0.0 {
        raise_with(
            PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
            format!("{what} is all zeros: cosine distance is undefined for it"),
            "an embedding from inf_embed(...) is never all zeros",
        );
    }
    norm
}

/// `v` scaled to unit length.
pub fn unit(v: &[f32], what: &str) -> Vec<f32> {
    let norm = check_direction(v, what);
    v.iter().map(|x| (*x as f64 / norm) as f32).collect()
}

/// The ERROR for a vector whose length is not the index's dimension.
pub fn raise_dimension_mismatch(what: &str, got: usize, index: &str, dim: usize, hint: &str) -> ! {
    raise_with(
        PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
        format!("{what} has {got} dimensions; index \"{index}\" holds {dim}-dimensional vectors"),
        hint,
    )
}
