//! Engine errors become PostgreSQL errors with an SQLSTATE and a hint.

use crate::engine::{EngineError, ErrorKind};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

fn sqlstate(kind: ErrorKind) -> PgSqlErrorCode {
    match kind {
        ErrorKind::InvalidInput => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        ErrorKind::ModelFiles => PgSqlErrorCode::ERRCODE_UNDEFINED_FILE,
        ErrorKind::Runtime => PgSqlErrorCode::ERRCODE_CONFIG_FILE_ERROR,
        ErrorKind::Inference => PgSqlErrorCode::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION,
        ErrorKind::Cancelled => PgSqlErrorCode::ERRCODE_QUERY_CANCELED,
        ErrorKind::Worker => PgSqlErrorCode::ERRCODE_SYSTEM_ERROR,
        ErrorKind::OutOfMemory => PgSqlErrorCode::ERRCODE_OUT_OF_MEMORY,
        ErrorKind::Device => PgSqlErrorCode::ERRCODE_SYSTEM_ERROR,
    }
}

fn report(e: EngineError, level: PgLogLevel) {
    let mut report = ErrorReport::new(sqlstate(e.kind), e.message, "inf_ir");
    if let Some(hint) = e.hint {
        report = report.set_hint(hint);
    }
    report.report(level);
}

/// Raise `e` as an ERROR; the session goes on.
pub fn raise(e: EngineError) -> ! {
    report(e, PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

pub fn warn(e: EngineError) {
    report(e, PgLogLevel::WARNING);
}

/// Raise an ERROR with an SQLSTATE, message and hint.
pub fn raise_with(code: PgSqlErrorCode, message: impl Into<String>, hint: impl Into<String>) -> ! {
    ErrorReport::new(code, message.into(), "inf_ir")
        .set_hint(hint.into())
        .report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

pub trait OrRaise<T> {
    fn or_raise(self) -> T;
}

impl<T> OrRaise<T> for Result<T, EngineError> {
    fn or_raise(self) -> T {
        self.unwrap_or_else(|e| raise(e))
    }
}

/// The message of an error caught with `PgTryBuilder`.
pub fn caught_message(caught: &pgrx::pg_sys::panic::CaughtError) -> String {
    match caught {
        pgrx::pg_sys::panic::CaughtError::PostgresError(report)
        | pgrx::pg_sys::panic::CaughtError::ErrorReport(report)
        | pgrx::pg_sys::panic::CaughtError::RustPanic { ereport: report, .. } => report.message().to_string(),
    }
}
