//! The SQL that makes a corpus follow its source table.
//!
//! Per corpus N, in schema inf_ir:
//! - `corpus_N_key(row)`, `corpus_N_text(row)`, `corpus_N_metadata(row)`:
//!   what a source row gives its passage. SQL-standard bodies (BEGIN
//!   ATOMIC), so PostgreSQL records the columns they use: a renamed column is
//!   followed, a dropped one is refused while the corpus exists.
//! - `corpus_N_read(keys)` / `corpus_N_lock(keys)`: the rows of these keys,
//!   as the corpus's owner (SECURITY DEFINER); `lock` takes FOR SHARE and
//!   skips rows a writer holds, so the embedder never waits on the
//!   application.
//! - `corpus_N_present(keys)`: which keys the caller can see now, in the
//!   caller's snapshot and with the caller's privileges (search checks every
//!   result against it).
//! - `corpus_N_backfill()`: queues every row (at creation).
//! - `corpus_N_changed()`: the statement-level trigger function for INSERT,
//!   UPDATE, DELETE and TRUNCATE (transition tables: one statement per write
//!   statement, not per row).
//! - INSERT instead fires `inf_ir.source_row_inserted(N, attnum)`, a
//!   row-level trigger in C, when the key is one column whose output
//!   function is its `::text` and reads no setting, on a table that is not
//!   partitioned: the common case, and the one where a single-row INSERT
//!   pays most for a plpgsql trigger with a transition table.
//!
//! Keys travel as text: a one-column key as its text form, a composite key
//! as a JSON array of its columns' text forms. Where a key column's text
//! form depends on settings (a timestamp, a float), the functions that make
//! or read keys pin those settings, so a key reads the same in every session.

use super::spec::SourceSpec;

/// search_path, pinned on every function (they are SECURITY DEFINER or read
/// tables by name).
const PINNED_SEARCH_PATH: &str = "SET search_path = pg_catalog, pg_temp";
/// Settings a key's text form can depend on (dates, times, intervals,
/// floats, money), pinned where a key column has such a type.
const PINNED_KEY_SETTINGS: &str = "SET \"DateStyle\" = 'ISO, YMD' SET \"IntervalStyle\" = 'postgres' \
     SET \"TimeZone\" = 'UTC' SET extra_float_digits = 1 SET lc_monetary = 'C'";
/// Key types whose text form no setting changes: their functions skip the
/// pins above (each SET clause costs every write statement some microseconds).
const SETTING_FREE_KEY_TYPES: [&str; 9] =
    ["smallint", "integer", "bigint", "text", "uuid", "boolean", "oid", "numeric", "character varying"];
/// Key types whose `::text` is their output function (boolean's and
/// character's casts are not) and reads no setting: the row-level INSERT
/// trigger writes their keys as the SQL functions do.
const OUTPUT_IS_TEXT_KEY_TYPES: [&str; 8] =
    ["smallint", "integer", "bigint", "text", "uuid", "oid", "numeric", "character varying"];

/// A type as `format_type` spells it, without its modifier: `numeric(10,2)` → `numeric`.
fn base_type(sql_type: &str) -> &str {
    sql_type.split('(').next().unwrap_or_default().trim()
}

/// An identifier, always quoted.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A string literal.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Name of one of the corpus's functions in schema inf_ir (unqualified).
pub fn function_name(corpus_id: i32, role: &str) -> String {
    format!("corpus_{corpus_id}_{role}")
}

/// Name of the trigger the corpus puts on its source for `event`.
pub fn trigger_name(corpus_id: i32, event: &str) -> String {
    format!("inf_ir_corpus_{corpus_id}_{}", event.to_ascii_lowercase())
}

/// The write statements that fire the corpus's trigger.
pub const EVENTS: [&str; 4] = ["INSERT", "UPDATE", "DELETE", "TRUNCATE"];

/// The functions a corpus keeps, in the order they are made.
pub const ROLES: [&str; 8] = ["key", "text", "metadata", "read", "lock", "present", "backfill", "changed"];

impl SourceSpec {
    /// The SET clauses of a function that makes or reads keys.
    fn pinned(&self) -> String {
        let setting_free = self.key.iter().all(|k| {
            let base = base_type(&k.sql_type);
            SETTING_FREE_KEY_TYPES.contains(&base) || base == "character"
        });
        if setting_free {
            PINNED_SEARCH_PATH.to_string()
        } else {
            format!("{PINNED_SEARCH_PATH} {PINNED_KEY_SETTINGS}")
        }
    }

    /// The key column's number when INSERT takes the row-level C trigger.
    fn row_trigger_key(&self) -> Option<i16> {
        match self.key.as_slice() {
            [one] if !self.partitioned && OUTPUT_IS_TEXT_KEY_TYPES.contains(&base_type(&one.sql_type)) => {
                Some(one.attnum)
            }
            _ => None,
        }
    }

    fn f(&self, role: &str) -> String {
        format!("inf_ir.{}", function_name(self.corpus_id, role))
    }

    /// The key of row `s` (a parameter of the table's row type) as text.
    fn key_expr(&self) -> String {
        match self.key.as_slice() {
            [one] => format!("(s).{}::text", quote_ident(&one.name)),
            many => format!(
                "jsonb_build_array({})::text",
                many.iter()
                    .map(|k| format!("(s).{}::text", quote_ident(&k.name)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// Rows of table alias `s` whose key is in the text array `keys`, written
    /// so that the key's index answers it.
    fn key_match(&self) -> String {
        match self.key.as_slice() {
            [one] => format!("s.{} = ANY (keys::{}[])", quote_ident(&one.name), one.sql_type),
            many => format!(
                "({}) IN (SELECT {} FROM unnest(keys) AS k)",
                many.iter()
                    .map(|k| format!("s.{}", quote_ident(&k.name)))
                    .collect::<Vec<_>>()
                    .join(", "),
                many.iter()
                    .enumerate()
                    .map(|(i, k)| format!("(k::jsonb ->> {i})::{}", k.sql_type))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    fn text_expr(&self) -> String {
        format!(
            "concat_ws(' ', {})",
            self.text
                .iter()
                .map(|c| format!("NULLIF((s).{}::text, '')", quote_ident(c)))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    fn metadata_expr(&self) -> String {
        if self.metadata.is_empty() {
            return "'{}'::jsonb".into();
        }
        format!(
            "jsonb_build_object({})",
            self.metadata
                .iter()
                .map(|c| format!("{}, (s).{}", quote_literal(c), quote_ident(c)))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    /// Statements that make the corpus's functions and triggers, in order.
    pub fn create_statements(&self) -> Vec<String> {
        let (t, id) = (&self.table, self.corpus_id);
        let pinned = self.pinned();
        let row_columns = format!(
            "{key}(s), {text}(s), {meta}(s) FROM {t} s WHERE {matched}",
            key = self.f("key"),
            text = self.f("text"),
            meta = self.f("metadata"),
            matched = self.key_match()
        );
        let mut out = vec![
            format!(
                "CREATE FUNCTION {}(s {t}) RETURNS text LANGUAGE sql STABLE PARALLEL SAFE
                 BEGIN ATOMIC SELECT {}; END",
                self.f("key"),
                self.key_expr()
            ),
            format!(
                "CREATE FUNCTION {}(s {t}) RETURNS text LANGUAGE sql STABLE PARALLEL SAFE
                 BEGIN ATOMIC SELECT {}; END",
                self.f("text"),
                self.text_expr()
            ),
            format!(
                "CREATE FUNCTION {}(s {t}) RETURNS jsonb LANGUAGE sql STABLE PARALLEL SAFE
                 BEGIN ATOMIC SELECT {}; END",
                self.f("metadata"),
                self.metadata_expr()
            ),
            format!(
                "CREATE FUNCTION {}(keys text[]) RETURNS TABLE (key text, text text, metadata jsonb)
                 LANGUAGE sql STABLE SECURITY DEFINER {pinned}
                 BEGIN ATOMIC SELECT {row_columns}; END",
                self.f("read")
            ),
            format!(
                "CREATE FUNCTION {}(keys text[]) RETURNS TABLE (key text, text text, metadata jsonb)
                 LANGUAGE sql VOLATILE SECURITY DEFINER {pinned}
                 BEGIN ATOMIC SELECT {row_columns} FOR SHARE OF s SKIP LOCKED; END",
                self.f("lock")
            ),
            format!(
                "CREATE FUNCTION {}(keys text[]) RETURNS SETOF text
                 LANGUAGE sql STABLE SECURITY INVOKER {pinned}
                 BEGIN ATOMIC SELECT {}(s) FROM {t} s WHERE {}; END",
                self.f("present"),
                self.f("key"),
                self.key_match()
            ),
            format!(
                "CREATE FUNCTION {}() RETURNS void
                 LANGUAGE sql VOLATILE SECURITY DEFINER {pinned}
                 BEGIN ATOMIC INSERT INTO inf_ir.source_changes (corpus_id, key) SELECT {id}, {}(s) FROM {t} s; END",
                self.f("backfill"),
                self.f("key")
            ),
            self.trigger_function(),
        ];
        // The owner's privileges stay with the owner: nobody else may call
        // the functions that read rows or write passages as it.
        for role in ["read", "lock", "backfill", "changed"] {
            let args = if role == "read" || role == "lock" { "text[]" } else { "" };
            out.push(format!("REVOKE ALL ON FUNCTION {}({args}) FROM PUBLIC", self.f(role)));
        }
        for event in EVENTS {
            if let (true, Some(attnum)) = (event == "INSERT", self.row_trigger_key()) {
                out.push(format!(
                    "CREATE TRIGGER {} AFTER INSERT ON {t} FOR EACH ROW EXECUTE FUNCTION inf_ir.source_row_inserted('{id}', '{attnum}')",
                    trigger_name(id, event)
                ));
                continue;
            }
            let transition = match event {
                "INSERT" => "REFERENCING NEW TABLE AS new_rows",
                "UPDATE" => "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
                "DELETE" => "REFERENCING OLD TABLE AS old_rows",
                _ => "",
            };
            out.push(format!(
                "CREATE TRIGGER {} AFTER {event} ON {t} {transition} FOR EACH STATEMENT EXECUTE FUNCTION {}()",
                trigger_name(id, event),
                self.f("changed")
            ));
        }
        out
    }

    /// The trigger function. INSERT queues the new keys. UPDATE pairs old
    /// and new rows by key: unchanged text with changed metadata updates the
    /// passage in place (no re-embedding); changed text, a changed key, or a
    /// passage this snapshot cannot see (not embedded yet) is queued. DELETE
    /// removes the passages at once (queueing keys whose passage it cannot
    /// see); TRUNCATE empties the corpus. Every step is in the writer's
    /// transaction, so a rollback undoes it.
    fn trigger_function(&self) -> String {
        let (id, key, text, meta) = (self.corpus_id, self.f("key"), self.f("text"), self.f("metadata"));
        let pinned = self.pinned();
        format!(
            "CREATE FUNCTION {name}() RETURNS trigger
             LANGUAGE plpgsql SECURITY DEFINER {pinned} AS $body$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO inf_ir.source_changes (corpus_id, key) SELECT {id}, {key}(n) FROM new_rows n;
    ELSIF TG_OP = 'UPDATE' THEN
        WITH o AS (SELECT {key}(r) AS key, {text}(r) AS text, {meta}(r) AS metadata FROM old_rows r),
             n AS (SELECT {key}(r) AS key, {text}(r) AS text, {meta}(r) AS metadata FROM new_rows r),
             pairs AS (SELECT n.key, n.text IS DISTINCT FROM o.text AS text_changed,
                              n.metadata IS DISTINCT FROM o.metadata AS metadata_changed, n.metadata
                       FROM n JOIN o USING (key)),
             moved AS (UPDATE inf_ir.passages p SET metadata = x.metadata FROM pairs x
                       WHERE x.metadata_changed AND NOT x.text_changed
                         AND p.corpus_id = {id} AND p.external_id = x.key
                       RETURNING p.external_id)
        INSERT INTO inf_ir.source_changes (corpus_id, key)
        SELECT {id}, x.key FROM pairs x
        WHERE x.text_changed OR (x.metadata_changed AND NOT EXISTS (SELECT 1 FROM moved m WHERE m.external_id = x.key))
        UNION ALL SELECT {id}, n.key FROM n WHERE NOT EXISTS (SELECT 1 FROM o WHERE o.key = n.key)
        UNION ALL SELECT {id}, o.key FROM o WHERE NOT EXISTS (SELECT 1 FROM n WHERE n.key = o.key);
    ELSIF TG_OP = 'DELETE' THEN
        WITH o AS (SELECT {key}(r) AS key FROM old_rows r),
             gone AS (DELETE FROM inf_ir.passages p USING o
                      WHERE p.corpus_id = {id} AND p.external_id = o.key RETURNING p.external_id)
        INSERT INTO inf_ir.source_changes (corpus_id, key)
        SELECT {id}, o.key FROM o WHERE NOT EXISTS (SELECT 1 FROM gone g WHERE g.external_id = o.key);
    ELSE
        DELETE FROM inf_ir.passages WHERE corpus_id = {id};
        DELETE FROM inf_ir.source_changes WHERE corpus_id = {id};
    END IF;
    RETURN NULL;
END
$body$",
            name = self.f("changed"),
        )
    }

    /// Statements that remove the corpus's triggers and functions (any that
    /// are left: a dropped source took its triggers and row functions along).
    pub fn drop_statements(&self, source_exists: bool) -> Vec<String> {
        let mut out = Vec::new();
        if source_exists {
            for event in EVENTS {
                out.push(format!(
                    "DROP TRIGGER IF EXISTS {} ON {}",
                    trigger_name(self.corpus_id, event),
                    self.table
                ));
            }
        }
        for role in ROLES.iter().rev() {
            out.push(format!("DROP FUNCTION IF EXISTS {}", self.f(role)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::source::KeyColumn;

    fn spec(key: &[(&str, &str)], metadata: &[&str]) -> SourceSpec {
        SourceSpec {
            corpus_id: 7,
            table: "public.docs".into(),
            key: key
                .iter()
                .enumerate()
                .map(|(i, (n, t))| KeyColumn { name: n.to_string(), sql_type: t.to_string(), attnum: i as i16 + 2 })
                .collect(),
            text: vec!["title".into(), "body".into()],
            metadata: metadata.iter().map(|m| m.to_string()).collect(),
            partitioned: false,
        }
    }

    #[test]
    fn one_column_keys_are_their_text_and_match_through_the_key_type() {
        let s = spec(&[("id", "bigint")], &["lang"]);
        assert_eq!(s.key_expr(), "(s).\"id\"::text");
        assert_eq!(s.key_match(), "s.\"id\" = ANY (keys::bigint[])");
    }

    #[test]
    fn composite_keys_are_json_arrays_matched_column_by_column() {
        let s = spec(&[("tenant", "integer"), ("doc", "text")], &[]);
        assert_eq!(s.key_expr(), "jsonb_build_array((s).\"tenant\"::text, (s).\"doc\"::text)::text");
        assert_eq!(
            s.key_match(),
            "(s.\"tenant\", s.\"doc\") IN (SELECT (k::jsonb ->> 0)::integer, (k::jsonb ->> 1)::text FROM unnest(keys) AS k)"
        );
    }

    #[test]
    fn text_skips_empty_columns_and_metadata_names_its_columns() {
        let s = spec(&[("id", "bigint")], &["lang", "tenant \"x\""]);
        assert_eq!(
            s.text_expr(),
            "concat_ws(' ', NULLIF((s).\"title\"::text, ''), NULLIF((s).\"body\"::text, ''))"
        );
        assert_eq!(
            s.metadata_expr(),
            "jsonb_build_object('lang', (s).\"lang\", 'tenant \"x\"', (s).\"tenant \"\"x\"\"\")"
        );
        assert_eq!(spec(&[("id", "bigint")], &[]).metadata_expr(), "'{}'::jsonb");
    }

    #[test]
    fn every_function_pins_settings_and_every_event_gets_a_trigger() {
        let s = spec(&[("id", "bigint")], &["lang"]);
        let all = s.create_statements();
        assert_eq!(all.len(), ROLES.len() + 4 + EVENTS.len());
        for role in ["read", "lock", "backfill", "changed"] {
            assert!(all.iter().any(|x| x.starts_with(&format!("REVOKE ALL ON FUNCTION inf_ir.corpus_7_{role}("))));
        }
        for role in ["read", "lock", "present", "backfill", "changed"] {
            let f = all.iter().find(|x| x.contains(&format!("inf_ir.corpus_7_{role}("))).unwrap();
            assert!(!f.contains("\"TimeZone\" = 'UTC'"), "a bigint key needs no pinned settings");
            assert!(f.contains("search_path = pg_catalog, pg_temp"), "{role} pins search_path");
        }
        let timestamped = spec(&[("id", "bigint"), ("at", "timestamp with time zone")], &[]);
        for role in ["read", "lock", "present", "backfill", "changed"] {
            let all = timestamped.create_statements();
            let f = all.iter().find(|x| x.contains(&format!("inf_ir.corpus_7_{role}("))).unwrap();
            assert!(f.contains("\"TimeZone\" = 'UTC'"), "{role} pins the settings a timestamp's text needs");
        }
        assert_eq!(spec(&[("code", "character varying(20)")], &[]).pinned(), PINNED_SEARCH_PATH);
        assert!(all.iter().any(|x| x.contains("FOR SHARE OF s SKIP LOCKED")));
        assert!(all.iter().any(|x| x.contains("corpus_7_present") && x.contains("SECURITY INVOKER")));
        for e in EVENTS {
            assert!(all.iter().any(|x| x.starts_with(&format!("CREATE TRIGGER inf_ir_corpus_7_{}", e.to_lowercase()))));
        }
        let drops = s.drop_statements(true);
        assert_eq!(drops.len(), ROLES.len() + EVENTS.len());
        assert_eq!(s.drop_statements(false).len(), ROLES.len());
    }

    #[test]
    fn insert_takes_the_row_trigger_only_for_one_plain_key_column_on_a_plain_table() {
        let row_trigger = |s: &SourceSpec| {
            s.create_statements()
                .iter()
                .any(|x| x.contains("FOR EACH ROW EXECUTE FUNCTION inf_ir.source_row_inserted('7', '2')"))
        };
        let statement_trigger = |s: &SourceSpec| {
            s.create_statements().iter().any(|x| {
                x.starts_with("CREATE TRIGGER inf_ir_corpus_7_insert AFTER INSERT ON public.docs REFERENCING NEW TABLE")
            })
        };
        for plain in ["bigint", "integer", "text", "uuid", "numeric(10,2)", "character varying(20)"] {
            let s = spec(&[("id", plain)], &[]);
            assert!(row_trigger(&s) && !statement_trigger(&s), "{plain}");
        }
        // Their ::text is not their output function, or reads a setting.
        for other in ["boolean", "character(4)", "timestamp with time zone", "date", "double precision"] {
            let s = spec(&[("id", other)], &[]);
            assert!(!row_trigger(&s) && statement_trigger(&s), "{other}");
        }
        let composite = spec(&[("tenant", "integer"), ("doc", "integer")], &[]);
        assert!(!row_trigger(&composite) && statement_trigger(&composite));
        let mut partitioned = spec(&[("id", "bigint")], &[]);
        partitioned.partitioned = true;
        assert!(!row_trigger(&partitioned) && statement_trigger(&partitioned));
    }

    #[test]
    fn quoting_doubles_quotes() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
