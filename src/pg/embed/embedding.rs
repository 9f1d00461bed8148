//! SQL embedding functions: one text, or many in one call (batched).

use crate::engine::{EmbedInput, EngineError};
use crate::pg::embed::inference;
use crate::pg::embed::models;
use crate::pg::errors::raise;
use pgrx::prelude::*;

/// Embed the present inputs with `model`; `None` inputs give `None` vectors.
fn embed_all(inputs: &[Option<EmbedInput<'_>>], model: Option<&str>) -> Vec<Option<Vec<f32>>> {
    let present: Vec<EmbedInput<'_>> = inputs.iter().flatten().copied().collect();
    if present.is_empty() {
        return vec![None; inputs.len()];
    }
    let row = models::lookup(model);
    let mut vectors = inference::embed(&row, &present).into_iter();
    inputs.iter().map(|i| i.as_ref().and_then(|_| vectors.next())).collect()
}

/// Embed a passage (document side). NULL passage gives NULL.
#[pg_extern(stable, parallel_restricted)]
fn inf_embed(passage: Option<&str>, model: default!(Option<&str>, "NULL")) -> Option<Vec<f32>> {
    embed_all(&[passage.map(EmbedInput::Passage)], model).pop().flatten()
}

/// Embed a query with an instruction (query side). A NULL query gives NULL; a
/// NULL or empty instruction means no instruction.
#[pg_extern(stable, parallel_restricted)]
fn inf_embed_query(
    instruction: Option<&str>,
    query: Option<&str>,
    model: default!(Option<&str>, "NULL"),
) -> Option<Vec<f32>> {
    let input = query.map(|query| EmbedInput::Query { instruction, query });
    embed_all(&[input], model).pop().flatten()
}

/// Embed many passages in batches; one row per input, `ord` is its 1-based position.
#[pg_extern(stable, parallel_restricted)]
fn inf_embed_many(
    passages: Option<Array<&str>>,
    model: default!(Option<&str>, "NULL"),
) -> TableIterator<'static, (name!(ord, i32), name!(embedding, Option<Vec<f32>>))> {
    let Some(passages) = passages else {
        return TableIterator::new(std::iter::empty());
    };
    let inputs: Vec<Option<EmbedInput<'_>>> = passages.iter().map(|p| p.map(EmbedInput::Passage)).collect();
    numbered(embed_all(&inputs, model))
}

/// Embed many queries in batches. `instructions` is NULL (no instruction),
/// one instruction for every query, or one per query.
#[pg_extern(stable, parallel_restricted)]
fn inf_embed_query_many(
    instructions: Option<Array<&str>>,
    queries: Option<Array<&str>>,
    model: default!(Option<&str>, "NULL"),
) -> TableIterator<'static, (name!(ord, i32), name!(embedding, Option<Vec<f32>>))> {
    let Some(queries) = queries else {
        return TableIterator::new(std::iter::empty());
    };
    let instructions: Vec<Option<&str>> = match &instructions {
        Some(a) => a.iter().collect(),
        None => Vec::new(),
    };
    let n = queries.len();
    let instruction_for = |i: usize| -> Option<&str> {
        match instructions.len() {
            0 => None,
            1 => instructions[0],
            _ => instructions[i],
        }
    };
    if instructions.len() > 1 && instructions.len() != n {
        raise(
            EngineError::invalid(format!("{} instructions for {n} queries", instructions.len()))
                .with_hint("pass NULL, a single instruction for all queries, or one per query"),
        );
    }
    let inputs: Vec<Option<EmbedInput<'_>>> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| {
            q.map(|query| EmbedInput::Query {
                instruction: instruction_for(i),
                query,
            })
        })
        .collect();
    numbered(embed_all(&inputs, model))
}

fn numbered(
    vectors: Vec<Option<Vec<f32>>>,
) -> TableIterator<'static, (name!(ord, i32), name!(embedding, Option<Vec<f32>>))> {
    TableIterator::new(vectors.into_iter().enumerate().map(|(i, v)| (i as i32 + 1, v)))
}
