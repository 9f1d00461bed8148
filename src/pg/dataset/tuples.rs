//! The InF-IR dataset in SQL: seed import, positives from instructions,
//! JSONL import/export in the released layout, training triples, and the
//! bi-encoder proxy evaluator.

use crate::engine::embed::template::Template;
use crate::engine::topk::dot;
use crate::engine::{EmbedInput, EngineError};
use crate::formats::{id_text, parse_jsonl, parse_qrels, InfIrRow, LineError};
use crate::pg::embed::inference;
use crate::pg::embed::models;
use crate::pg::errors::{raise, OrRaise};
use crate::pg::gucs;
use crate::pg::interrupt::PgInterrupt;
use crate::pg::privileges::{read_server_file, require_read_server_files};
use pgrx::prelude::*;
use serde::Deserialize;

pgrx::extension_sql_file!(
    "../../../sql/dataset.sql",
    name = "dataset_tables",
    requires = ["corpora_tables"]
);

fn line_error(path: &str, e: LineError) -> ! {
    raise(
        EngineError::invalid(format!("{path} line {}: {}", e.line, e.message))
            .with_hint("fix that line; nothing from the file was imported"),
    )
}

fn spi_count(sql: &str, args: &[pgrx::datum::DatumWithOid<'_>]) -> i64 {
    Spi::get_one_with_args::<i64>(sql, args)
        .unwrap_or_else(|e| pgrx::error!("inf_ir: {e}"))
        .unwrap_or(0)
}

#[derive(Deserialize)]
struct SeedQuery {
    #[serde(rename = "_id")]
    id: serde_json::Value,
    text: String,
    #[serde(default)]
    metadata: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct SeedPassage {
    #[serde(rename = "_id")]
    id: serde_json::Value,
    text: String,
}

/// Import an MS MARCO-style seed from server files: queries and passages as
/// JSONL (`_id`, `text`, optional `metadata`), qrels as TSV. Idempotent: rows
/// already present are left alone. All three files or nothing.
#[pg_extern(volatile, parallel_unsafe)]
fn inf_import_seed(
    queries_path: &str,
    passages_path: &str,
    qrels_path: &str,
    source: default!(&str, "'msmarco'"),
) -> TableIterator<
    'static,
    (
        name!(queries_added, i64),
        name!(passages_added, i64),
        name!(qrels_added, i64),
    ),
> {
    require_read_server_files("import server files");
    let queries: Vec<SeedQuery> =
        parse_jsonl(&read_server_file(queries_path)).unwrap_or_else(|e| line_error(queries_path, e));
    let passages: Vec<SeedPassage> =
        parse_jsonl(&read_server_file(passages_path)).unwrap_or_else(|e| line_error(passages_path, e));
    let qrels = parse_qrels(&read_server_file(qrels_path)).unwrap_or_else(|e| line_error(qrels_path, e));

    let q_ids: Vec<String> = queries.iter().map(|q| id_text(&q.id)).collect();
    let q_text: Vec<String> = queries.iter().map(|q| q.text.clone()).collect();
    let q_meta: Vec<String> = queries
        .iter()
        .map(|q| q.metadata.clone().unwrap_or(serde_json::json!({})).to_string())
        .collect();
    let added_q = spi_count(
        "WITH i AS (INSERT INTO inf_ir.seed_queries(query_id, text, metadata, source)
                    SELECT id, t, m::jsonb, $4 FROM unnest($1::text[], $2::text[], $3::text[]) AS u(id, t, m)
                    ON CONFLICT DO NOTHING RETURNING 1) SELECT count(*) FROM i",
        &[q_ids.into(), q_text.into(), q_meta.into(), source.into()],
    );
    let p_ids: Vec<String> = passages.iter().map(|p| id_text(&p.id)).collect();
    let p_text: Vec<String> = passages.iter().map(|p| p.text.clone()).collect();
    let added_p = spi_count(
        "WITH i AS (INSERT INTO inf_ir.seed_passages(passage_id, text, source)
                    SELECT id, t, $3 FROM unnest($1::text[], $2::text[]) AS u(id, t)
                    ON CONFLICT DO NOTHING RETURNING 1) SELECT count(*) FROM i",
        &[p_ids.into(), p_text.into(), source.into()],
    );
    let (r_q, r_p, r_rel): (Vec<String>, Vec<String>, Vec<i32>) = qrels.into_iter().fold(
        (Vec::new(), Vec::new(), Vec::new()),
        |(mut a, mut b, mut c), (q, p, r)| {
            a.push(q);
            b.push(p);
            c.push(r);
            (a, b, c)
        },
    );
    let added_r = spi_count(
        "WITH i AS (INSERT INTO inf_ir.seed_qrels(query_id, passage_id, relevance)
                    SELECT q, p, r FROM unnest($1::text[], $2::text[], $3::int[]) AS u(q, p, r)
                    ON CONFLICT DO NOTHING RETURNING 1) SELECT count(*) FROM i",
        &[r_q.into(), r_p.into(), r_rel.into()],
    );
    TableIterator::once((added_q, added_p, added_r))
}

#[derive(Deserialize)]
struct InstructionLine {
    #[serde(rename = "_id", default)]
    id: Option<serde_json::Value>,
    text: String,
    #[serde(default)]
    query_id: Option<serde_json::Value>,
    #[serde(default)]
    metadata: Option<serde_json::Value>,
}

/// Form positive tuples from a JSONL file of instructions written for seed
/// queries: one group per instruction and judged-relevant passage of its
/// query. The query is found by `query_id`, else by the `_id` prefix before
/// its last `_` (InstructIR's `1078446_1`), else by `metadata.origin_query`
/// equal to the query's text. Idempotent; unmatched instructions are counted
/// as skipped.
#[pg_extern(volatile, parallel_unsafe)]
fn inf_form_positives(
    instructions_path: &str,
    source: default!(&str, "'instructions'"),
    generator: default!(&str, "'unknown'"),
) -> TableIterator<
    'static,
    (
        name!(positives_added, i64),
        name!(instructions, i64),
        name!(skipped, i64),
    ),
> {
    require_read_server_files("import server files");
    let lines: Vec<InstructionLine> =
        parse_jsonl(&read_server_file(instructions_path)).unwrap_or_else(|e| line_error(instructions_path, e));
    let texts: Vec<String> = lines.iter().map(|l| l.text.clone()).collect();
    let ids: Vec<Option<String>> = lines
        .iter()
        .map(|l| {
            l.query_id.as_ref().map(id_text).or_else(|| {
                let id = id_text(l.id.as_ref()?);
                id.rsplit_once('_').map(|(prefix, _)| prefix.to_string())
            })
        })
        .collect();
    let origins: Vec<Option<String>> = lines
        .iter()
        .map(|l| {
            l.metadata
                .as_ref()
                .and_then(|m| m.get("origin_query"))
                .and_then(|v| v.as_str())
                .map(str::to_string)
        })
        .collect();
    let total = texts.len() as i64;
    let (added, skipped) = Spi::get_two_with_args::<i64, i64>(
        "WITH input AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS u(instruction, qid, origin, n)),
         resolved AS (
             SELECT i.n, i.instruction,
                    COALESCE((SELECT q.query_id FROM inf_ir.seed_queries q WHERE q.query_id = i.qid),
                             (SELECT q.query_id FROM inf_ir.seed_queries q WHERE q.text = i.origin ORDER BY q.query_id LIMIT 1)) AS qid
             FROM input i WHERE btrim(i.instruction) <> ''),
         matched AS (
             SELECT r.n, r.qid, p.passage_id AS pid, r.instruction, q.text AS query, p.text AS passage
             FROM resolved r JOIN inf_ir.seed_queries q ON q.query_id = r.qid
             JOIN inf_ir.seed_qrels j ON j.query_id = q.query_id AND j.relevance > 0
             JOIN inf_ir.seed_passages p ON p.passage_id = j.passage_id),
         ins AS (
             INSERT INTO inf_ir.tuple_groups(seed_query_id, seed_passage_id, query, instruction, passage, source, generator)
             SELECT DISTINCT ON (md5(query || chr(1) || instruction || chr(1) || passage))
                    qid, pid, query, instruction, passage, $4, $5
             FROM matched ORDER BY md5(query || chr(1) || instruction || chr(1) || passage), n
             ON CONFLICT ((md5(query || chr(1) || instruction || chr(1) || passage))) DO NOTHING
             RETURNING 1)
         SELECT (SELECT count(*) FROM ins),
                (SELECT count(*) FROM input i WHERE NOT EXISTS (SELECT 1 FROM matched m WHERE m.n = i.n))",
        &[texts.into(), ids.into(), origins.into(), source.into(), generator.into()],
    )
    .unwrap_or_else(|e| pgrx::error!("inf_ir: {e}"));
    TableIterator::once((added.unwrap_or(0), total, skipped.unwrap_or(0)))
}

/// Import released InF-IR rows (JSONL with `query_positive, instruction_positive,
/// document_positive, query_negative, instruction_negative,
/// hard_negative_document_1, hard_negative_document_2`). Idempotent; the whole
/// file or nothing; a malformed line is reported with its number.
#[pg_extern(volatile, parallel_unsafe)]
fn inf_import_tuples_jsonl(
    path: &str,
    source: default!(&str, "'inf-ir'"),
    generator: default!(&str, "'unknown'"),
) -> TableIterator<'static, (name!(groups_added, i64), name!(negatives_added, i64), name!(rows, i64))> {
    require_read_server_files("import server files");
    let rows: Vec<InfIrRow> = parse_jsonl(&read_server_file(path)).unwrap_or_else(|e| line_error(path, e));
    for (i, r) in rows.iter().enumerate() {
        if let Err(m) = r.check() {
            line_error(
                path,
                LineError {
                    line: i + 1,
                    message: m,
                },
            );
        }
    }
    let col = |f: &dyn Fn(&InfIrRow) -> Option<String>| -> Vec<Option<String>> { rows.iter().map(f).collect() };
    let (groups, negatives) = Spi::get_two_with_args::<i64, i64>(
        "WITH input AS (
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])
                 WITH ORDINALITY AS u(qp, ip, dp, qn, inn, hn1, hn2, n)),
         g AS (
             INSERT INTO inf_ir.tuple_groups(query, instruction, passage, source, generator)
             SELECT DISTINCT ON (md5(qp || chr(1) || ip || chr(1) || dp)) qp, ip, dp, $8, $9 FROM input ORDER BY md5(qp || chr(1) || ip || chr(1) || dp), n
             ON CONFLICT ((md5(query || chr(1) || instruction || chr(1) || passage))) DO NOTHING
             RETURNING group_id, query, instruction, passage),
         ids AS (
             SELECT i.*, COALESCE(g.group_id, t.group_id) AS group_id
             FROM input i
             LEFT JOIN g ON md5(g.query || chr(1) || g.instruction || chr(1) || g.passage) = md5(i.qp || chr(1) || i.ip || chr(1) || i.dp)
             LEFT JOIN inf_ir.tuple_groups t ON md5(t.query || chr(1) || t.instruction || chr(1) || t.passage) = md5(i.qp || chr(1) || i.ip || chr(1) || i.dp)),
         negs AS (
             INSERT INTO inf_ir.tuple_negatives(group_id, kind, altered, passage, source, generator)
             SELECT DISTINCT ON (group_id, kind) group_id, kind, altered, passage, $8, $9 FROM (
                 SELECT group_id, 'instruction' AS kind, inn AS altered, hn1 AS passage, n FROM ids WHERE inn IS NOT NULL
                 UNION ALL
                 SELECT group_id, 'query', qn, hn2, n FROM ids WHERE qn IS NOT NULL) x
             ORDER BY group_id, kind, n
             ON CONFLICT DO NOTHING
             RETURNING 1)
         SELECT (SELECT count(*) FROM g), (SELECT count(*) FROM negs)",
        &[
            col(&|r| Some(r.query_positive.clone())).into(),
            col(&|r| Some(r.instruction_positive.clone())).into(),
            col(&|r| Some(r.document_positive.clone())).into(),
            col(&|r| r.query_negative.clone()).into(),
            col(&|r| r.instruction_negative.clone()).into(),
            col(&|r| r.hard_negative_document_1.clone()).into(),
            col(&|r| r.hard_negative_document_2.clone()).into(),
            source.into(),
            generator.into(),
        ],
    )
    .unwrap_or_else(|e| pgrx::error!("inf_ir: importing {path} failed: {e}"));
    TableIterator::once((groups.unwrap_or(0), negatives.unwrap_or(0), rows.len() as i64))
}

fn read_rows(status: Option<&str>, complete_only: bool) -> Vec<(i64, InfIrRow)> {
    Spi::connect(|client| {
        let t = client.select(
            "SELECT group_id, query_positive, instruction_positive, document_positive, query_negative,
                    instruction_negative, hard_negative_document_1, hard_negative_document_2
             FROM inf_ir.inf_ir_rows
             WHERE ($1::text IS NULL OR status = $1)
               AND (NOT $2 OR (query_negative IS NOT NULL AND instruction_negative IS NOT NULL))
             ORDER BY group_id",
            None,
            &[status.into(), complete_only.into()],
        )?;
        t.map(|r| {
            Ok((
                r.get::<i64>(1)?.unwrap_or_default(),
                InfIrRow {
                    query_positive: r.get::<String>(2)?.unwrap_or_default(),
                    instruction_positive: r.get::<String>(3)?.unwrap_or_default(),
                    document_positive: r.get::<String>(4)?.unwrap_or_default(),
                    query_negative: r.get::<String>(5)?,
                    instruction_negative: r.get::<String>(6)?,
                    hard_negative_document_1: r.get::<String>(7)?,
                    hard_negative_document_2: r.get::<String>(8)?,
                },
            ))
        })
        .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
    })
    .unwrap_or_else(|e| pgrx::error!("inf_ir: {e}"))
}

/// Export groups as JSONL lines in the released layout (keys in the released
/// order, compact JSON, one group per row, by group id). `status` NULL means
/// every group. Write them with `psql -At -c "SELECT * FROM inf_export_tuples_jsonl()" > rows.jsonl`.
#[pg_extern(stable, parallel_safe)]
fn inf_export_tuples_jsonl(status: default!(Option<&str>, "NULL")) -> SetOfIterator<'static, String> {
    SetOfIterator::new(read_rows(status, false).into_iter().map(|(_, r)| r.to_line()))
}

/// Training triples for sentence-transformers: the anchor is the model's
/// query template applied to (instruction+, query+); the positive and the two
/// hard negatives (the instruction-negative's and the query-negative's
/// passages) go through the model's passage template. Complete groups only.
#[pg_extern(stable, parallel_safe)]
fn inf_export_training_triples(
    status: default!(Option<&str>, "'accepted'"),
    model: default!(Option<&str>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(group_id, i64),
        name!(anchor, String),
        name!(positive, String),
        name!(negative_1, String),
        name!(negative_2, String),
    ),
> {
    let row = models::lookup(model);
    let query_t = Template::query(&row.spec.query_template).or_raise();
    let passage_t = Template::passage(&row.spec.passage_template).or_raise();
    let out: Vec<_> = read_rows(status, true)
        .into_iter()
        .map(|(id, r)| {
            (
                id,
                query_t
                    .render_query(Some(&r.instruction_positive), &r.query_positive)
                    .text,
                passage_t.render_passage(&r.document_positive),
                passage_t.render_passage(r.hard_negative_document_1.as_deref().unwrap_or_default()),
                passage_t.render_passage(r.hard_negative_document_2.as_deref().unwrap_or_default()),
            )
        })
        .collect();
    TableIterator::new(out)
}

/// Groups validated per embedding call: bounds memory and lets a cancel land between chunks.
const VALIDATION_CHUNK: usize = 128;

/// The bi-encoder proxy evaluator: scores every complete group (pending ones
/// only, unless `only_pending` is false) with `model`, stores the five
/// scores under the evaluator name `bi-encoder:<model>`, then applies
/// `margin` (see inf_apply_validation). Returns the counts after applying.
#[pg_extern(volatile, parallel_unsafe)]
fn inf_validate_tuples(
    model: default!(Option<&str>, "NULL"),
    margin: default!(f32, 0.0),
    only_pending: default!(bool, true),
) -> TableIterator<
    'static,
    (
        name!(scored, i64),
        name!(accepted, i64),
        name!(rejected, i64),
        name!(pending, i64),
    ),
> {
    let row = models::lookup(model);
    let engine = inference::embedder(&row);
    let evaluator = format!("bi-encoder:{}", row.spec.name);
    let groups = read_rows(if only_pending { Some("pending") } else { None }, true);
    let options = gucs::batch_options();
    let mut scored = 0i64;
    for chunk in groups.chunks(VALIDATION_CHUNK) {
        let mut inputs = Vec::with_capacity(chunk.len() * 6);
        for (_, r) in chunk {
            let (qn, inn) = (
                r.query_negative.as_deref().unwrap(),
                r.instruction_negative.as_deref().unwrap(),
            );
            inputs.push(EmbedInput::Query {
                instruction: Some(&r.instruction_positive),
                query: &r.query_positive,
            });
            inputs.push(EmbedInput::Query {
                instruction: Some(inn),
                query: &r.query_positive,
            });
            inputs.push(EmbedInput::Query {
                instruction: Some(&r.instruction_positive),
                query: qn,
            });
            inputs.push(EmbedInput::Passage(&r.document_positive));
            inputs.push(EmbedInput::Passage(r.hard_negative_document_1.as_deref().unwrap()));
            inputs.push(EmbedInput::Passage(r.hard_negative_document_2.as_deref().unwrap()));
        }
        let v = engine.embed(&inputs, options, &PgInterrupt).or_raise();
        let (mut ids, mut cols) = (Vec::new(), [Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new()]);
        for (i, (id, _)) in chunk.iter().enumerate() {
            let e = &v[i * 6..i * 6 + 6];
            let (q_pos, q_ineg, q_qneg, p_pos, p_ineg, p_qneg) = (&e[0], &e[1], &e[2], &e[3], &e[4], &e[5]);
            ids.push(*id);
            cols[0].push(dot(q_pos, p_pos));
            cols[1].push(dot(q_ineg, p_pos));
            cols[2].push(dot(q_qneg, p_pos));
            cols[3].push(dot(q_ineg, p_ineg));
            cols[4].push(dot(q_qneg, p_qneg));
        }
        let [a, b, c, d, e] = cols;
        Spi::run_with_args(
            "INSERT INTO inf_ir.validation_scores(group_id, evaluator, pos_pos, ineg_pos, qneg_pos, ineg_own, qneg_own)
             SELECT g, $2, a, b, c, d, e FROM unnest($1::bigint[], $3::real[], $4::real[], $5::real[], $6::real[], $7::real[]) AS u(g, a, b, c, d, e)
             ON CONFLICT (group_id, evaluator) DO UPDATE SET pos_pos = EXCLUDED.pos_pos, ineg_pos = EXCLUDED.ineg_pos,
                 qneg_pos = EXCLUDED.qneg_pos, ineg_own = EXCLUDED.ineg_own, qneg_own = EXCLUDED.qneg_own, computed_at = now()",
            &[ids.into(), evaluator.as_str().into(), a.into(), b.into(), c.into(), d.into(), e.into()],
        )
        .unwrap_or_else(|e| pgrx::error!("inf_ir: storing scores failed: {e}"));
        scored += chunk.len() as i64;
        if groups.len() > VALIDATION_CHUNK {
            pgrx::notice!("inf_validate_tuples: {scored} of {} groups scored", groups.len());
        }
    }
    let (accepted, rejected) = Spi::get_two_with_args::<i64, i64>(
        "SELECT accepted, rejected FROM inf_apply_validation($1, $2)",
        &[margin.into(), evaluator.as_str().into()],
    )
    .unwrap_or_else(|e| pgrx::error!("inf_ir: {e}"));
    let pending = spi_count("SELECT count(*) FROM inf_ir.tuple_groups WHERE status = 'pending'", &[]);
    TableIterator::once((scored, accepted.unwrap_or(0), rejected.unwrap_or(0), pending))
}
