//! Corpora that follow an application's table: the source checked against
//! the catalog (table, key, column types, privileges), the per-corpus
//! functions and triggers made and dropped (text from
//! `engine::source::statements`), the backfill, and the check search makes
//! that each result's source row is visible to the caller.

use crate::engine::source::{statements, KeyColumn, SourceSpec};
use crate::pg::errors::{raise, raise_with};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::collections::HashSet;

pgrx::extension_sql_file!(
    "../../../sql/source_corpora.sql",
    name = "source_corpora",
    requires = ["corpora_tables"]
);

/// What the caller named: the table and its columns (None: the primary key).
pub struct SourceRequest<'a> {
    pub table: &'a str,
    pub id: Option<Vec<String>>,
    pub text: Vec<String>,
    pub metadata: Vec<String>,
}

/// One column as the catalog has it.
struct ColumnInfo {
    sql_type: String,
    attnum: i16,
    is_string: bool,
    not_null: bool,
}

/// Check the request against the catalog; raise with a hint on the first problem.
pub fn describe(corpus_id: i32, request: &SourceRequest) -> (pg_sys::Oid, SourceSpec) {
    let (oid, qualified, relkind) = table_of(request.table);
    if relkind != "r" && relkind != "p" {
        raise_with(
            PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            format!("\"{}\" is not a table", request.table),
            "a corpus follows a table (or a partitioned table): its triggers keep the passages in step",
        );
    }
    for (privilege, why) in [
        ("SELECT", "the corpus reads the table's rows with your privileges"),
        ("TRIGGER", "the corpus puts triggers on the table"),
    ] {
        if !has_privilege(oid, privilege) {
            raise_with(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                format!("permission denied for table {qualified}: {privilege} is needed"),
                format!("{why}; GRANT {privilege} ON {qualified} TO the role that makes the corpus"),
            );
        }
    }
    let key_names = match &request.id {
        Some(names) => {
            check_unique_key(oid, &qualified, names);
            names.clone()
        }
        None => primary_key(oid).unwrap_or_else(|| {
            raise_with(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("table {qualified} has no primary key"),
                "a passage is named by its row's key: add one (ALTER TABLE ... ADD PRIMARY KEY (id)), \
                 or name the columns of a unique index on NOT NULL columns with id => ARRAY['...']",
            )
        }),
    };
    let key = key_names
        .iter()
        .map(|name| {
            let c = column(oid, &qualified, name);
            KeyColumn {
                name: name.clone(),
                sql_type: c.sql_type,
                attnum: c.attnum,
            }
        })
        .collect();
    for name in &request.text {
        let c = column(oid, &qualified, name);
        if !c.is_string {
            raise_with(
                PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
                format!("column \"{name}\" of {qualified} is {}, not text", c.sql_type),
                "text names the columns whose words are embedded (text, varchar, char); \
                 for another type add a generated column, e.g. price_text text GENERATED ALWAYS AS (price::text) STORED",
            );
        }
    }
    for name in &request.metadata {
        column(oid, &qualified, name);
    }
    let spec = SourceSpec {
        corpus_id,
        table: qualified,
        key,
        text: request.text.clone(),
        metadata: request.metadata.clone(),
        partitioned: relkind == "p",
    };
    spec.check().unwrap_or_else(|e| raise(e));
    (oid, spec)
}

/// The table's oid, its schema-qualified quoted name and its relkind.
fn table_of(name: &str) -> (pg_sys::Oid, String, String) {
    let row = Spi::connect(|client| {
        let t = client.select(
            "SELECT c.oid, format('%I.%I', n.nspname, c.relname), c.relkind::text
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.oid = to_regclass($1)",
            None,
            &[name.into()],
        )?;
        let mut out = None;
        for r in t {
            out = Some((
                r.get::<pg_sys::Oid>(1)?.expect("oid"),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<String>(3)?.unwrap_or_default(),
            ));
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    });
    match row {
        Ok(Some(row)) => row,
        Ok(None) => raise_with(
            PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            format!("relation \"{name}\" does not exist"),
            "source names the table to follow, schema-qualified if it is not on search_path, e.g. source => 'public.docs'",
        ),
        Err(e) => raise_with(
            PgSqlErrorCode::ERRCODE_INVALID_NAME,
            format!("source \"{name}\" is not a table name: {e}"),
            "e.g. source => 'public.docs'",
        ),
    }
}

fn has_privilege(oid: pg_sys::Oid, privilege: &str) -> bool {
    Spi::get_one_with_args::<bool>("SELECT has_table_privilege($1, $2)", &[oid.into(), privilege.into()])
        .ok()
        .flatten()
        .unwrap_or(false)
}

fn column(oid: pg_sys::Oid, qualified: &str, name: &str) -> ColumnInfo {
    let row = Spi::connect(|client| {
        let t = client.select(
            "SELECT format_type(a.atttypid, a.atttypmod), t.typcategory = 'S', a.attnotnull, a.attnum
             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
             WHERE a.attrelid = $1 AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped",
            None,
            &[oid.into(), name.into()],
        )?;
        let mut out = None;
        for r in t {
            out = Some(ColumnInfo {
                sql_type: r.get::<String>(1)?.unwrap_or_default(),
                is_string: r.get::<bool>(2)?.unwrap_or(false),
                not_null: r.get::<bool>(3)?.unwrap_or(false),
                attnum: r.get::<i16>(4)?.unwrap_or_default(),
            });
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })
    .unwrap_or_else(|e| pgrx::error!("inf_ir: cannot read the columns of {qualified}: {e}"));
    row.unwrap_or_else(|| {
        let columns = Spi::get_one_with_args::<String>(
            "SELECT string_agg(attname, ', ' ORDER BY attnum) FROM pg_attribute
             WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped",
            &[oid.into()],
        )
        .ok()
        .flatten()
        .unwrap_or_default();
        raise_with(
            PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
            format!("column \"{name}\" of {qualified} does not exist"),
            format!("its columns: {columns}"),
        )
    })
}

/// The primary key's columns in key order.
fn primary_key(oid: pg_sys::Oid) -> Option<Vec<String>> {
    Spi::get_one_with_args::<Vec<String>>(
        "SELECT array_agg(a.attname::text ORDER BY k.ord)
         FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, ord)
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
         WHERE i.indrelid = $1 AND i.indisprimary",
        &[oid.into()],
    )
    .ok()
    .flatten()
}

/// `names` must be the columns of a unique, non-partial index on NOT NULL columns.
fn check_unique_key(oid: pg_sys::Oid, qualified: &str, names: &[String]) {
    if names.is_empty() {
        raise_with(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "id must name at least one column",
            "leave id out to use the primary key",
        );
    }
    for name in names {
        if !column(oid, qualified, name).not_null {
            raise_with(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("key column \"{name}\" of {qualified} allows NULL"),
                "a passage is named by its row's key: the key's columns must be NOT NULL",
            );
        }
    }
    let unique = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (
           SELECT 1 FROM pg_index i
           WHERE i.indrelid = $1 AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
             AND (SELECT array_agg(a.attname::text ORDER BY a.attname)
                  FROM unnest(i.indkey) k(attnum) JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum)
                 = (SELECT array_agg(n ORDER BY n) FROM unnest($2::text[]) n))",
        &[oid.into(), names.to_vec().into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false);
    if !unique {
        raise_with(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("({}) is not a unique key of {qualified}", names.join(", ")),
            "name the primary key's columns, or those of a unique index (no WHERE, no expressions)",
        );
    }
}

/// Store the source in inf_ir.corpora, make the functions and triggers, and
/// queue every existing row. Runs in the caller's transaction: the triggers'
/// lock keeps writers out until it commits, so no row is missed or queued twice.
pub fn attach(oid: pg_sys::Oid, spec: &SourceSpec) {
    let key: Vec<String> = spec.key.iter().map(|k| k.name.clone()).collect();
    Spi::run_with_args(
        "UPDATE inf_ir.corpora SET source = $2::oid::regclass, source_key = $3, source_text = $4,
                source_metadata = $5, source_owner = current_user::regrole
         WHERE corpus_id = $1",
        &[
            spec.corpus_id.into(),
            oid.into(),
            key.into(),
            spec.text.clone().into(),
            spec.metadata.clone().into(),
        ],
    )
    .unwrap_or_else(|e| pgrx::error!("inf_ir: cannot record the source of corpus {}: {e}", spec.corpus_id));
    for statement in spec.create_statements() {
        Spi::run(&statement).unwrap_or_else(|e| {
            raise_with(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                format!("cannot make corpus {} follow {}: {e}", spec.corpus_id, spec.table),
                format!("the failing statement: {}", statement.lines().next().unwrap_or_default()),
            )
        });
    }
    Spi::run(&format!(
        "SELECT inf_ir.{}()",
        statements::function_name(spec.corpus_id, "backfill")
    ))
    .unwrap_or_else(|e| pgrx::error!("inf_ir: cannot queue the rows of {}: {e}", spec.table));
}

/// Remove a corpus's triggers and functions (before its row is deleted).
pub fn detach(corpus_id: i32) {
    let Ok(Some(table)) = Spi::get_one_with_args::<String>(
        "SELECT CASE WHEN to_regclass(source::oid::regclass::text) IS NULL THEN '' ELSE
                format('%I.%I', n.nspname, c.relname) END
         FROM inf_ir.corpora co LEFT JOIN pg_class c ON c.oid = co.source
         LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE co.corpus_id = $1 AND co.source IS NOT NULL",
        &[corpus_id.into()],
    ) else {
        return;
    };
    let spec = SourceSpec {
        corpus_id,
        table: table.clone(),
        key: Vec::new(),
        text: Vec::new(),
        metadata: Vec::new(),
        partitioned: false,
    };
    for statement in spec.drop_statements(!table.is_empty()) {
        Spi::run(&statement).unwrap_or_else(|e| pgrx::error!("inf_ir: {e}"));
    }
    Spi::run_with_args(
        "DELETE FROM inf_ir.source_changes WHERE corpus_id = $1",
        &[corpus_id.into()],
    )
    .unwrap_or_else(|e| pgrx::error!("inf_ir: {e}"));
}

/// The keys among `keys` whose source row the caller can see now (its
/// snapshot, its privileges: without SELECT on the source this raises
/// PostgreSQL's "permission denied").
pub fn visible_keys(corpus_id: i32, keys: Vec<String>) -> HashSet<String> {
    let function = statements::function_name(corpus_id, "present");
    crate::pg::spi_read::select_planned(&format!("SELECT k FROM inf_ir.{function}($1) k"), &[keys.into()], |t| {
        t.map(|r| Ok(r.get::<String>(1)?.unwrap_or_default()))
            .collect::<Result<_, pgrx::spi::SpiError>>()
    })
    // PostgreSQL's own errors (no SELECT on the source: "permission denied
    // for table ...") reach the caller as they are.
    .unwrap_or_else(|e| pgrx::error!("inf_ir: cannot check the source rows of corpus {corpus_id}: {e}"))
}
