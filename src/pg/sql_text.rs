//! SQL text built safely: literals and the extension's schema for
//! statements inf_ir writes, and the check that user text documented as
//! "an SQL condition" is one expression.
//!
//! Such a condition is spliced into a query, so it must be one expression
//! and never statements:
//! `true); DELETE FROM t; SELECT (true` would otherwise run the DELETE.
//! PostgreSQL's own parser decides, on `SELECT (<text>)`: exactly one
//! statement, a plain SELECT of one value with no FROM, WHERE or any other
//! clause (text that closes the parenthesis and adds a clause shows up as
//! that clause).

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgList;

/// The wrapper a condition is checked in and spliced with: its own lines,
/// so that a trailing `--` comment cannot swallow the closing parenthesis.
pub fn parenthesized(condition: &str) -> String {
    format!("(\n{condition}\n)")
}

/// Ok when `condition` is one SQL expression; otherwise why not (the
/// parser's message for a syntax error).
pub fn check_one_expression(condition: &str) -> Result<(), String> {
    if condition.contains('\0') {
        return Err("it contains a NUL byte".into());
    }
    let sql = format!("SELECT {}", parenthesized(condition));
    PgTryBuilder::new(|| unsafe { shape_of(&sql) })
        .catch_others(|caught| match caught {
            pg_sys::panic::CaughtError::PostgresError(report)
            | pg_sys::panic::CaughtError::ErrorReport(report)
            | pg_sys::panic::CaughtError::RustPanic { ereport: report, .. } => Err(report.message().to_string()),
        })
        .execute()
}

/// Parse `sql` (raw parse only: names are not looked up, nothing runs) and
/// say whether it is `SELECT <one value>` and nothing else.
unsafe fn shape_of(sql: &str) -> Result<(), String> {
    let text = std::ffi::CString::new(sql).expect("no NUL (checked)");
    let statements = PgList::<pg_sys::RawStmt>::from_pg(pg_sys::raw_parser(
        text.as_ptr(),
        pg_sys::RawParseMode::RAW_PARSE_DEFAULT,
    ));
    if statements.len() != 1 {
        return Err(format!("it makes {} statements, not one expression", statements.len()));
    }
    let raw = statements.get_ptr(0).expect("one statement");
    let node = (*raw).stmt;
    if !pgrx::is_a(node, pg_sys::NodeTag::T_SelectStmt) {
        return Err("it is not one expression".into());
    }
    let select = node as *mut pg_sys::SelectStmt;
    let s = &*select;
    let targets = PgList::<pg_sys::ResTarget>::from_pg(s.targetList);
    let extra_clause = !s.distinctClause.is_null()
        || !s.intoClause.is_null()
        || !s.fromClause.is_null()
        || !s.whereClause.is_null()
        || !s.groupClause.is_null()
        || !s.havingClause.is_null()
        || !s.windowClause.is_null()
        || !s.valuesLists.is_null()
        || !s.sortClause.is_null()
        || !s.limitOffset.is_null()
        || !s.limitCount.is_null()
        || !s.lockingClause.is_null()
        || !s.withClause.is_null()
        || s.op != pg_sys::SetOperation::SETOP_NONE;
    if targets.len() != 1 || extra_clause {
        return Err("it is not one expression (it adds values or clauses of its own)".into());
    }
    Ok(())
}

/// A string as an SQL literal (standard_conforming_strings is on by default
/// since PostgreSQL 9.1; backslashes are doubled for E'' form either way).
pub fn quote_literal(text: &str) -> String {
    if text.contains('\\') {
        format!("E'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", text.replace('\'', "''"))
    }
}

/// The schema inf_ir's functions and operators live in, quoted.
pub fn extension_schema() -> String {
    thread_local! {
        static SCHEMA: std::cell::OnceCell<String> = const { std::cell::OnceCell::new() };
    }
    SCHEMA.with(|s| {
        s.get_or_init(|| {
            crate::pg::spi_read::one::<String>(
                "SELECT quote_ident(n.nspname) FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
                 WHERE e.extname = 'inf_ir'",
                &[],
            )
            .ok()
            .flatten()
            .unwrap_or_else(|| "public".into())
        })
        .clone()
    })
}
