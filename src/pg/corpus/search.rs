//! inf_search, inf_search_vector and inf_rerank.

use crate::engine::topk::{dot, Hit};
use crate::engine::{EmbedInput, EngineError};
use crate::pg::corpus::corpora::{self, CorpusRow};
use crate::pg::corpus::vector_indexes;
use crate::pg::embed::inference;
use crate::pg::embed::models::{self, ModelRow};
use crate::pg::errors::{raise, raise_with};
use crate::pg::gucs;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::collections::HashMap;

/// Upper bound on k: beyond it a ranked list is an export, not a search.
const MAX_K: i32 = 10_000;

type SearchRows = TableIterator<
    'static,
    (
        name!(passage_id, i64),
        name!(external_id, String),
        name!(body, String),
        name!(score, f32),
        name!(rank, i32),
    ),
>;

pub fn check_k(k: Option<i32>) -> usize {
    check_count(k, "k", "k is the number of passages to return, e.g. 10")
}

/// A count of passages (k, a re-ranking depth) between 1 and MAX_K.
pub fn check_count(n: Option<i32>, name: &str, hint: &str) -> usize {
    match n {
        Some(n) if (1..=MAX_K).contains(&n) => n as usize,
        other => raise(
            EngineError::invalid(format!(
                "{name} must be between 1 and {MAX_K}, not {}",
                other.map_or("NULL".into(), |n| n.to_string())
            ))
            .with_hint(hint),
        ),
    }
}

fn required<'a>(value: Option<&'a str>, what: &str) -> &'a str {
    value.unwrap_or_else(|| {
        raise(EngineError::invalid(format!("{what} must not be NULL")).with_hint("pass the text to search for"))
    })
}

pub fn embed_query(model: &ModelRow, instruction: Option<&str>, query: &str) -> Vec<f32> {
    let mut v = inference::embed(model, &[EmbedInput::Query { instruction, query }]);
    v.pop().expect("one vector per input")
}

/// The named corpus and the model its passages are embedded with.
fn resolve_corpus(name: Option<&str>) -> (&str, CorpusRow, ModelRow) {
    let name = required(name, "corpus");
    let corpus = corpora::lookup(name);
    let model = models::lookup(Some(&corpus.model));
    (name, corpus, model)
}

/// A caller's query vector must have the model's dimension and finite values
/// (a NaN would rank passages arbitrarily).
fn check_query_vector(query_vector: &[f32], model: &ModelRow, whose: &str) {
    if query_vector.len() != model.spec.dimension {
        raise(
            EngineError::invalid(format!(
                "query vector has {} dimensions; {whose} model \"{}\" with {}",
                query_vector.len(),
                model.spec.name,
                model.spec.dimension
            ))
            .with_hint("embed the query with the corpus's model, e.g. inf_embed_query(instruction, query, model)"),
        );
    }
    if let Some(i) = query_vector.iter().position(|x| !x.is_finite()) {
        raise(
            EngineError::invalid(format!(
                "query vector has a non-finite value ({}) at position {}",
                query_vector[i],
                i + 1
            ))
            .with_hint("pass a vector from inf_embed_query(...)"),
        );
    }
}

/// Rows the index scan returns beyond k, so that ties at the k-th place are
/// broken by the smaller passage id as in an exact scan.
const TIE_SLACK: usize = 10;

/// Results a table-following corpus asks for beyond k at first: passages
/// whose source row the caller cannot see are dropped after ranking.
const SOURCE_SLACK: usize = 16;
/// The most rows one such search ranks before it gives up on filling k.
const SOURCE_MAX_RANKED: usize = 100_000;

/// `rank_corpus`, and for a corpus that follows a table only the rows whose
/// source row the caller sees now (its snapshot and privileges): a row
/// deleted, or rolled back, is never returned, whatever the state of its
/// passage. Asks for 4x more while rows are dropped and the corpus has more.
fn search_corpus(
    corpus_name: &str,
    corpus: &CorpusRow,
    model: &ModelRow,
    query_vector: &[f32],
    k: usize,
    filter: Option<pgrx::JsonB>,
) -> Vec<Row> {
    if !corpus.follows_table {
        return rank_corpus(corpus_name, corpus, model, query_vector, k, filter);
    }
    let mut want = k + SOURCE_SLACK;
    loop {
        let filter = filter.as_ref().map(|f| pgrx::JsonB(f.0.clone()));
        let ranked = rank_corpus(corpus_name, corpus, model, query_vector, want, filter);
        let exhausted = ranked.len() < want || want >= SOURCE_MAX_RANKED;
        let visible =
            crate::pg::corpus::source::visible_keys(corpus.corpus_id, ranked.iter().map(|r| r.1.clone()).collect());
        let kept: Vec<Row> = ranked
            .into_iter()
            .filter(|r| visible.contains(&r.1))
            .take(k)
            .enumerate()
            .map(|(i, (id, ext, body, score, _))| (id, ext, body, score, i as i32 + 1))
            .collect();
        if kept.len() >= k || exhausted {
            return kept;
        }
        want = (want * 4).min(SOURCE_MAX_RANKED);
    }
}

/// Rank `corpus`'s passages against `query_vector` in the caller's
/// snapshot: through the corpus's inf_ivf index (or, with
/// inf_ir.exact_search or without an index, an exact scan), then by score
/// and the smaller passage id.
fn rank_corpus(
    corpus_name: &str,
    corpus: &CorpusRow,
    model: &ModelRow,
    query_vector: &[f32],
    k: usize,
    filter: Option<pgrx::JsonB>,
) -> Vec<Row> {
    if let Some(f) = &filter {
        crate::pg::corpus::filter_index::check_filter_shape(f);
    }
    check_query_vector(query_vector, model, &format!("corpus \"{corpus_name}\" uses"));
    let (current, pending) = counts(corpus, &model.fingerprint);
    if !current {
        if pending > 0 {
            raise_with(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!(
                    "corpus \"{corpus_name}\" has no passages embedded with the current files of model \"{}\" ({pending} passages pending)",
                    model.spec.name
                ),
                format!("embed them first: CALL inf_embed_corpus('{corpus_name}')"),
            );
        }
        pgrx::notice!("inf_ir: corpus \"{corpus_name}\" has no passages");
        return Vec::new();
    }
    if pending > 0 {
        pgrx::notice!(
            "inf_ir: {pending} passages of corpus \"{corpus_name}\" have no current embedding and were not searched; CALL inf_embed_corpus('{corpus_name}') to embed them"
        );
    }
    let indexed = vector_indexes::has_index(corpus.corpus_id, &model.fingerprint);
    if !indexed && !gucs::exact_search() {
        pgrx::notice!(
            "inf_ir: corpus \"{corpus_name}\" has no vector index for the current model files, so every passage was scanned; SELECT inf_corpus_index('{corpus_name}') makes it"
        );
    }
    let scope = Scope {
        schema: crate::pg::sql_text::extension_schema(),
        corpus_id: corpus.corpus_id,
        fingerprint: crate::pg::sql_text::quote_literal(&model.fingerprint),
    };
    if gucs::exact_search() || !indexed {
        return run_search(&scope.exact_sql(filter.is_some(), k), query_vector, filter.as_ref());
    }
    if let Some(f) = &filter {
        // A filter with an index of its own (inf_filter_index): search it.
        if let Some(index) = crate::pg::corpus::filter_index::find(corpus.corpus_id, &model.fingerprint, f) {
            return with_texts(crate::pg::corpus::index_top_k::top_k(index, query_vector, k, TIE_SLACK));
        }
        // A filter that keeps few passages: score all of them (exact). The
        // metadata index's candidate count decides before any row is read,
        // so a wrong estimate costs a bitmap, not a scan.
        let cap = gucs::exact_filter_rows();
        if cap > 0 && scope.filter_estimate(f) <= (cap as f64) * ESTIMATE_SLACK {
            if let Some(hits) = exact_filtered(corpus, &model.fingerprint, query_vector, k, cap, f) {
                return with_texts(hits);
            }
            pgrx::debug1!("inf_ir: the filter keeps more than {cap} passages; searching through the index");
        }
    }
    // Without sorts the planner must take the vector index's order: with
    // statistics from before a bulk load it would otherwise judge the new
    // corpus tiny, read it all through the btree and sort (exact, 5x slower).
    with_setting(c"enable_sort", c"off", || {
        run_search(&scope.index_sql(filter.is_some(), k), query_vector, filter.as_ref())
    })
}

/// Run `f` with a planner setting changed for its duration only (like a
/// function's SET clause); an error unwinds it with the transaction.
fn with_setting<R>(name: &std::ffi::CStr, value: &std::ffi::CStr, f: impl FnOnce() -> R) -> R {
    // SAFETY: the GUC nest level is opened and closed around `f` on this
    // backend's thread, as PostgreSQL's fmgr does for SET clauses.
    unsafe {
        let level = pg_sys::NewGUCNestLevel();
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
        let result = f();
        pg_sys::AtEOXact_GUC(true, level);
        result
    }
}

/// The exact top k of the passages that contain `filter` (through the
/// corpus's metadata index); None when more than `cap` do, or the corpus has
/// no metadata index (made by inf_create_corpus / inf_corpus_index).
fn exact_filtered(
    corpus: &CorpusRow,
    fingerprint: &str,
    query: &[f32],
    k: usize,
    cap: usize,
    filter: &pgrx::JsonB,
) -> Option<Vec<Hit>> {
    let (table, index) = crate::pg::spi_read::two_planned::<pg_sys::Oid, pg_sys::Oid>(
        "SELECT 'inf_ir.passages'::regclass::oid, to_regclass('inf_ir.' || $1)::oid",
        &[corpora::metadata_index_name(corpus.corpus_id).into()],
    )
    .unwrap_or_else(|e| pgrx::error!("inf_ir: cannot find the passages table: {e}"));
    let unit = crate::pg::ivf::vector::unit(query, "the query vector");
    let search = crate::pg::corpus::filtered_search::FilteredSearch {
        corpus_id: corpus.corpus_id,
        fingerprint,
        metadata_index: index?,
        query: &unit,
        k,
        cap,
    };
    let filter_datum = pgrx::JsonB(filter.0.clone()).into_datum().expect("a jsonb value");
    search.run(table?, filter_datum)
}

/// A filter estimated at up to this many times `inf_ir.exact_filter_rows`
/// is tried exactly: the metadata index's count of candidates then decides,
/// and building that bitmap is cheap next to reading the rows.
const ESTIMATE_SLACK: f64 = 2.0;

/// The SQL of one corpus's search. The corpus id and fingerprint are
/// literals, so that the planner matches the corpus's partial indexes; the
/// query vector is $1 and the filter, if any, $2.
struct Scope {
    schema: String,
    corpus_id: i32,
    fingerprint: String,
}

impl Scope {
    fn rows(&self) -> String {
        format!(
            "inf_ir.passages p WHERE p.corpus_id = {} AND p.embedded_with = {}",
            self.corpus_id, self.fingerprint
        )
    }

    fn distance(&self) -> String {
        format!("{}.inf_cosine_distance(p.embedding, $1)", self.schema)
    }

    /// Ranked rows: (passage_id, external_id, body, score).
    fn ranked(&self, inner: &str, k: usize) -> String {
        format!(
            "SELECT h.passage_id, p.external_id, p.body, (1 - h.d)::real AS score
             FROM ({inner}) h JOIN inf_ir.passages p ON p.passage_id = h.passage_id
             ORDER BY score DESC, h.passage_id LIMIT {k}"
        )
    }

    /// Every passage (that passes the filter) scored.
    fn exact_sql(&self, filtered: bool, k: usize) -> String {
        let inner = format!(
            "SELECT p.passage_id, {d} AS d FROM {rows} {filter} ORDER BY d, p.passage_id LIMIT {k}",
            d = self.distance(),
            rows = self.rows(),
            filter = if filtered { "AND p.metadata @> $2" } else { "" },
        );
        self.ranked(&inner, k)
    }

    /// Through the corpus's inf_ivf index. The filter is written so that no
    /// other index can answer it: this statement must read the vector index,
    /// whose iterative scan goes on until enough rows pass the filter.
    fn index_sql(&self, filtered: bool, k: usize) -> String {
        let inner = format!(
            "SELECT p.passage_id, {d} AS d FROM {rows} {filter}
             ORDER BY p.embedding OPERATOR({schema}.<=>) $1 LIMIT {limit}",
            d = self.distance(),
            rows = self.rows(),
            filter = if filtered { "AND (p.metadata @> $2) IS TRUE" } else { "" },
            schema = self.schema,
            limit = k + TIE_SLACK,
        );
        self.ranked(&inner, k)
    }

    /// The planner's estimate of the passages `filter` keeps in this corpus.
    fn filter_estimate(&self, filter: &pgrx::JsonB) -> f64 {
        let text = serde_json::to_string(&filter.0).expect("JSON value serialises");
        crate::pg::corpus::row_estimate::estimated_rows(&format!(
            "SELECT 1 FROM {} AND p.metadata @> {}::jsonb",
            self.rows(),
            crate::pg::sql_text::quote_literal(&text)
        ))
    }
}

/// A search result: passage id, external id, body, score, rank (from 1).
pub type Row = (i64, String, String, f32, i32);

/// Run a search statement (planned once per session): its rows ranked 1...
fn run_search(sql: &str, query: &[f32], filter: Option<&pgrx::JsonB>) -> Vec<Row> {
    let mut args: Vec<pgrx::datum::DatumWithOid> = vec![query.to_vec().into()];
    if let Some(f) = filter {
        args.push(pgrx::JsonB(f.0.clone()).into());
    }
    crate::pg::spi_read::select_planned(sql, &args, |t| {
        t.enumerate()
            .map(|(i, r)| {
                Ok((
                    r.get::<i64>(1)?.unwrap_or_default(),
                    r.get::<String>(2)?.unwrap_or_default(),
                    r.get::<String>(3)?.unwrap_or_default(),
                    r.get::<f32>(4)?.unwrap_or_default(),
                    i as i32 + 1,
                ))
            })
            .collect::<Result<_, pgrx::spi::SpiError>>()
    })
    .unwrap_or_else(|e| pgrx::error!("inf_ir: search failed: {e}"))
}

/// Whether the corpus has passages with a current embedding, and how many
/// have none (cheap: both come from the (corpus_id, embedded_with) index).
fn counts(corpus: &CorpusRow, fingerprint: &str) -> (bool, i64) {
    // Literals, not parameters: with parameters the plan cache found custom
    // plans cheaper and planned this statement (two sublinks) on every call.
    let (current, pending) = crate::pg::spi_read::two_planned::<bool, i64>(
        &format!(
            "SELECT EXISTS (SELECT 1 FROM inf_ir.passages WHERE corpus_id = {id} AND embedded_with = {fp}),
                    (SELECT count(*) FROM inf_ir.passages WHERE corpus_id = {id}
                       AND (embedded_with IS NULL OR embedded_with < {fp} OR embedded_with > {fp}))",
            id = corpus.corpus_id,
            fp = crate::pg::sql_text::quote_literal(fingerprint)
        ),
        &[],
    )
    .unwrap_or_else(|e| pgrx::error!("inf_ir: cannot count passages: {e}"));
    (current.unwrap_or(false), pending.unwrap_or(0))
}

/// Attach external ids and bodies (read in the caller's snapshot) to ranked hits.
fn with_texts(hits: Vec<Hit>) -> Vec<Row> {
    let mut texts = passage_texts(hits.iter().map(|h| h.id).collect());
    hits.into_iter()
        .filter_map(|h| texts.remove(&h.id).map(|(ext, body)| (h.id, ext, body, h.score)))
        .enumerate()
        .map(|(i, (id, ext, body, score))| (id, ext, body, score, i as i32 + 1))
        .collect()
}

/// What a passage's embedding is made of, and what an LLM judge reads: its
/// title and body (SQL over `inf_ir.passages p`).
const PASSAGE_TEXT: &str = "CASE WHEN COALESCE(p.title, '') = '' THEN p.body ELSE p.title || ' ' || p.body END";

/// The text (title and body) of each passage id visible in the caller's snapshot.
pub fn judged_texts(ids: Vec<i64>) -> HashMap<i64, String> {
    Spi::connect(|client| {
        let t = client.select(
            &format!("SELECT p.passage_id, {PASSAGE_TEXT} FROM inf_ir.passages p WHERE p.passage_id = ANY($1)"),
            None,
            &[ids.into()],
        )?;
        t.map(|r| {
            Ok((
                r.get::<i64>(1)?.unwrap_or_default(),
                r.get::<String>(2)?.unwrap_or_default(),
            ))
        })
        .collect::<Result<_, pgrx::spi::SpiError>>()
    })
    .unwrap_or_else(|e| pgrx::error!("inf_ir: cannot read passages: {e}"))
}

/// External id and body of each passage id visible in the caller's snapshot.
pub fn passage_texts(ids: Vec<i64>) -> HashMap<i64, (String, String)> {
    Spi::connect(|client| {
        let t = client.select(
            "SELECT passage_id, external_id, body FROM inf_ir.passages WHERE passage_id = ANY($1)",
            None,
            &[ids.into()],
        )?;
        t.map(|r| {
            Ok((
                r.get::<i64>(1)?.unwrap_or_default(),
                (
                    r.get::<String>(2)?.unwrap_or_default(),
                    r.get::<String>(3)?.unwrap_or_default(),
                ),
            ))
        })
        .collect::<Result<_, pgrx::spi::SpiError>>()
    })
    .unwrap_or_else(|e| pgrx::error!("inf_ir: cannot read passages: {e}"))
}

/// Search a corpus with an instruction and a query: the k best passages by
/// cosine similarity, through the corpus's inf_ivf index (approximate on
/// large corpora, with the recall BENCHMARKS.md measures; exact without an
/// index, with inf_ir.exact_search, or for a selective filter). A NULL or
/// empty instruction means none.
#[pg_extern(stable, parallel_restricted)]
fn inf_search(
    instruction: Option<&str>,
    query: Option<&str>,
    k: default!(Option<i32>, 10),
    corpus: default!(Option<&str>, "'default'"),
    filter: default!(Option<pgrx::JsonB>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(passage_id, i64),
        name!(external_id, String),
        name!(body, String),
        name!(score, f32),
        name!(rank, i32),
    ),
> {
    TableIterator::new(search_text(instruction, query, k, corpus, filter))
}

/// inf_search's rows: the query embedded with the corpus's model, then searched.
pub fn search_text(
    instruction: Option<&str>,
    query: Option<&str>,
    k: Option<i32>,
    corpus: Option<&str>,
    filter: Option<pgrx::JsonB>,
) -> Vec<Row> {
    let query = required(query, "query");
    let k = check_k(k);
    let (corpus_name, corpus, model) = resolve_corpus(corpus);
    let vector = embed_query(&model, instruction, query);
    search_corpus(corpus_name, &corpus, &model, &vector, k, filter)
}

/// Search a corpus by a given query vector (already embedded with the corpus's model).
#[pg_extern(stable, parallel_restricted)]
fn inf_search_vector(
    query_embedding: Option<Vec<f32>>,
    k: default!(Option<i32>, 10),
    corpus: default!(Option<&str>, "'default'"),
    filter: default!(Option<pgrx::JsonB>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(passage_id, i64),
        name!(external_id, String),
        name!(body, String),
        name!(score, f32),
        name!(rank, i32),
    ),
> {
    let vector = query_embedding.unwrap_or_else(|| {
        raise(EngineError::invalid("query_embedding must not be NULL").with_hint("pass inf_embed_query(...)"))
    });
    let k = check_k(k);
    let (corpus_name, corpus, model) = resolve_corpus(corpus);
    TableIterator::new(search_corpus(corpus_name, &corpus, &model, &vector, k, filter))
}

/// Re-rank candidate passages (e.g. a full-text search's top 100) for an
/// instruction and a query. Uses stored embeddings where current and embeds
/// the others on the fly (without storing them). Returns every candidate
/// found, best first, or the best k.
#[pg_extern(stable, parallel_restricted)]
fn inf_rerank(
    instruction: Option<&str>,
    query: Option<&str>,
    candidates: Option<Array<i64>>,
    k: default!(Option<i32>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(passage_id, i64),
        name!(external_id, String),
        name!(body, String),
        name!(score, f32),
        name!(rank, i32),
    ),
> {
    let query = required(query, "query");
    rerank(candidates, k, |model| embed_query(model, instruction, query))
}

/// inf_rerank with a query vector embedded elsewhere (a sharded corpus's
/// proxy embeds the query once and sends the vector to every shard).
#[pg_extern(stable, parallel_restricted)]
fn inf_rerank_vector(
    query_embedding: Option<Vec<f32>>,
    candidates: Option<Array<i64>>,
    k: default!(Option<i32>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(passage_id, i64),
        name!(external_id, String),
        name!(body, String),
        name!(score, f32),
        name!(rank, i32),
    ),
> {
    let vector = query_embedding.unwrap_or_else(|| {
        raise(EngineError::invalid("query_embedding must not be NULL").with_hint("pass inf_embed_query(...)"))
    });
    if vector.iter().any(|x| !x.is_finite()) || vector.is_empty() {
        // Checked before the candidates are read, so that an empty list does not hide it.
        raise(
            EngineError::invalid("query_embedding must be a non-empty vector of finite values")
                .with_hint("pass a vector from inf_embed_query(...)"),
        );
    }
    rerank(candidates, k, |model| {
        check_query_vector(&vector, model, "the candidates come from");
        vector.clone()
    })
}

/// Score the candidates against the query vector that `query_vector` makes
/// with their model; the best k (all without k).
fn rerank(
    candidates: Option<Array<i64>>,
    k: Option<i32>,
    query_vector: impl FnOnce(&ModelRow) -> Vec<f32>,
) -> SearchRows {
    let wanted: Vec<i64> = candidates.map(|a| a.iter().flatten().collect()).unwrap_or_default();
    let k = match k {
        None => usize::MAX,
        some => check_k(some),
    };
    let mut hits: Vec<Hit> = score_candidates(&wanted, query_vector)
        .into_iter()
        .map(|c| Hit {
            score: c.score,
            id: c.id,
        })
        .collect();
    hits.truncate(k);
    TableIterator::new(with_texts(hits))
}

/// A candidate passage scored by the bi-encoder.
pub struct ScoredCandidate {
    pub id: i64,
    /// What its embedding was made of (title and body).
    pub text: String,
    pub score: f32,
}

/// The visible passages among `wanted`, scored against the query vector
/// that `query_vector` makes with their model, best first (ties by the
/// smaller id). Candidates without a current embedding are embedded now.
pub fn score_candidates(wanted: &[i64], query_vector: impl FnOnce(&ModelRow) -> Vec<f32>) -> Vec<ScoredCandidate> {
    if wanted.is_empty() {
        return Vec::new();
    }
    struct Candidate {
        id: i64,
        text: String,
        embedding: Option<Vec<f32>>,
        model: String,
    }
    let found: Vec<Candidate> = Spi::connect(|client| {
        let t = client.select(
            &format!(
                "SELECT p.passage_id, {PASSAGE_TEXT},
                    CASE WHEN p.embedded_with = m.fingerprint THEN p.embedding END, c.model
             FROM inf_ir.passages p JOIN inf_ir.corpora c USING (corpus_id) JOIN inf_ir.models m ON m.name = c.model
             WHERE p.passage_id = ANY($1)"
            ),
            None,
            &[wanted.to_vec().into()],
        )?;
        t.map(|r| {
            Ok(Candidate {
                id: r.get::<i64>(1)?.unwrap_or_default(),
                text: r.get::<String>(2)?.unwrap_or_default(),
                embedding: r.get::<Vec<f32>>(3)?,
                model: r.get::<String>(4)?.unwrap_or_default(),
            })
        })
        .collect::<Result<_, pgrx::spi::SpiError>>()
    })
    .unwrap_or_else(|e| pgrx::error!("inf_ir: cannot read candidates: {e}"));
    let mut distinct: Vec<i64> = wanted.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    if found.len() < distinct.len() {
        pgrx::notice!(
            "inf_ir: {} of {} candidate ids are not visible passages",
            distinct.len() - found.len(),
            distinct.len()
        );
    }
    let Some(first) = found.first() else {
        return Vec::new();
    };
    if let Some(other) = found.iter().find(|c| c.model != first.model) {
        raise(
            EngineError::invalid(format!(
                "candidates come from corpora with different models (\"{}\" and \"{}\")",
                first.model, other.model
            ))
            .with_hint("re-rank candidates of one model at a time"),
        );
    }
    let model = models::lookup(Some(&first.model));
    let query_vector = query_vector(&model);
    // Candidates without a current embedding are embedded now, in one batch.
    let missing: Vec<EmbedInput<'_>> = found
        .iter()
        .filter(|c| c.embedding.is_none())
        .map(|c| EmbedInput::Passage(&c.text))
        .collect();
    let mut fresh = if missing.is_empty() {
        Vec::new().into_iter()
    } else {
        inference::embed(&model, &missing).into_iter()
    };
    let mut scored: Vec<ScoredCandidate> = found
        .into_iter()
        .map(|c| {
            let v = match c.embedding {
                Some(v) => v,
                None => fresh.next().expect("one vector per missing candidate"),
            };
            if v.len() != query_vector.len() {
                raise(
                    EngineError::invalid(format!(
                        "passage {} has a {}-dimensional embedding; model \"{}\" makes {}",
                        c.id,
                        v.len(),
                        model.spec.name,
                        query_vector.len()
                    ))
                    .with_hint("set its embedding to NULL and CALL inf_embed_corpus(corpus)"),
                );
            }
            ScoredCandidate {
                score: dot(&v, &query_vector),
                id: c.id,
                text: c.text,
            }
        })
        .collect();
    scored.sort_by(|a, b| {
        Hit {
            score: a.score,
            id: a.id,
        }
        .cmp(&Hit {
            score: b.score,
            id: b.id,
        })
    });
    scored
}
