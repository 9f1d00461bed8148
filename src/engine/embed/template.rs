//! Query and passage templates: `{instruction}`, `{query}` and `{passage}`
//! placeholders, rendered into text plus the byte span of each part so the
//! tokenizer step can cut the query while keeping the instruction whole.

use crate::engine::error::{EngineError, EngineResult};
use std::ops::Range;

/// The InF-IR form: the model reads `"{query} {instruction}"`.
pub const DEFAULT_QUERY_TEMPLATE: &str = "{query} {instruction}";
pub const DEFAULT_PASSAGE_TEMPLATE: &str = "{passage}";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Instruction,
    Query,
    Passage,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Slot(Slot),
}

/// A parsed template. Parsing once per model keeps the hot path to string pushes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    pieces: Vec<Piece>,
}

/// Rendered text and where the query landed in it (for query-side truncation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub text: String,
    pub query_span: Option<Range<usize>>,
}

impl Template {
    /// A query-side template: must contain `{query}`; `{instruction}` optional.
    pub fn query(source: &str) -> EngineResult<Self> {
        let t = Self::parse(source)?;
        if !t.has(Slot::Query) || t.has(Slot::Passage) {
            return Err(EngineError::invalid(format!(
                "query template {source:?} must contain {{query}} and must not contain {{passage}}"
            ))
            .with_hint("for example '{query} {instruction}' or 'Instruct: {instruction}\\nQuery: {query}'"));
        }
        Ok(t)
    }

    /// A passage-side template: must contain `{passage}` and nothing else.
    pub fn passage(source: &str) -> EngineResult<Self> {
        let t = Self::parse(source)?;
        if !t.has(Slot::Passage) || t.has(Slot::Query) || t.has(Slot::Instruction) {
            return Err(EngineError::invalid(format!(
                "passage template {source:?} must contain {{passage}} and no other placeholder"
            ))
            .with_hint("for example '{passage}' or 'passage: {passage}'"));
        }
        Ok(t)
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    fn has(&self, slot: Slot) -> bool {
        self.pieces.contains(&Piece::Slot(slot))
    }

    fn parse(source: &str) -> EngineResult<Self> {
        let mut pieces = Vec::new();
        let mut rest = source;
        while let Some(open) = rest.find('{') {
            let close = rest[open..].find('}').map(|c| open + c);
            let slot = close.and_then(|c| match &rest[open + 1..c] {
                "instruction" => Some(Slot::Instruction),
                "query" => Some(Slot::Query),
                "passage" => Some(Slot::Passage),
                _ => None,
            });
            match (slot, close) {
                (Some(slot), Some(c)) => {
                    if open > 0 {
                        pieces.push(Piece::Literal(rest[..open].to_string()));
                    }
                    pieces.push(Piece::Slot(slot));
                    rest = &rest[c + 1..];
                }
                _ => {
                    // A brace that is not a placeholder is literal text.
                    pieces.push(Piece::Literal(rest[..=open].to_string()));
                    rest = &rest[open + 1..];
                }
            }
        }
        if !rest.is_empty() {
            pieces.push(Piece::Literal(rest.to_string()));
        }
        Ok(Template {
            source: source.to_string(),
            pieces,
        })
    }

    /// Render the query side. With no (or an empty) instruction the instruction
    /// slot and the literal text between it and the query are dropped, so
    /// `"{query} {instruction}"` yields the bare query with no stray space.
    pub fn render_query(&self, instruction: Option<&str>, query: &str) -> Rendered {
        let instruction = instruction.filter(|i| !i.trim().is_empty());
        let pieces: Vec<&Piece> = match instruction {
            Some(_) => self.pieces.iter().collect(),
            None => self.pieces_without_instruction(),
        };
        let mut text = String::with_capacity(query.len() + instruction.map_or(0, str::len) + 32);
        let mut query_span = None;
        for piece in pieces {
            match piece {
                Piece::Literal(s) => text.push_str(s),
                Piece::Slot(Slot::Query) => {
                    let start = text.len();
                    text.push_str(query);
                    query_span = Some(start..text.len());
                }
                Piece::Slot(Slot::Instruction) => text.push_str(instruction.unwrap_or("")),
                Piece::Slot(Slot::Passage) => {}
            }
        }
        Rendered { text, query_span }
    }

    pub fn render_passage(&self, passage: &str) -> String {
        let mut text = String::with_capacity(passage.len() + 16);
        for piece in &self.pieces {
            match piece {
                Piece::Literal(s) => text.push_str(s),
                Piece::Slot(Slot::Passage) => text.push_str(passage),
                Piece::Slot(_) => {}
            }
        }
        text
    }

    /// Without an instruction the template renders in its query-only form:
    /// the instruction slot, the literal text between it and `{query}`, and the
    /// literal text on its far side (up to the template edge) are dropped.
    /// `"{query} {instruction}"` gives `"q"`, `"Instruct: {instruction}\nQuery: {query}"`
    /// gives `"q"`, `"query: {query} {instruction}"` gives `"query: q"`.
    fn pieces_without_instruction(&self) -> Vec<&Piece> {
        let slot_at = |slot| self.pieces.iter().position(|p| *p == Piece::Slot(slot));
        let (Some(inst), Some(query)) = (slot_at(Slot::Instruction), slot_at(Slot::Query)) else {
            return self.pieces.iter().collect();
        };
        // Literals run from the instruction towards the template edge away from the query.
        let is_literal = |i: usize| matches!(self.pieces[i], Piece::Literal(_));
        let (lo, hi) = if inst < query {
            let mut lo = inst;
            while lo > 0 && is_literal(lo - 1) {
                lo -= 1;
            }
            (lo, query) // drop [lo, query)
        } else {
            let mut hi = inst + 1;
            while hi < self.pieces.len() && is_literal(hi) {
                hi += 1;
            }
            (query + 1, hi) // drop (query, hi)
        };
        self.pieces
            .iter()
            .enumerate()
            .filter(|(i, _)| !(lo..hi).contains(i))
            .map(|(_, p)| p)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_template_joins_query_and_instruction() {
        let t = Template::query(DEFAULT_QUERY_TEMPLATE).unwrap();
        let r = t.render_query(Some("only peer-reviewed sources"), "vitamin d");
        assert_eq!(r.text, "vitamin d only peer-reviewed sources");
        assert_eq!(&r.text[r.query_span.unwrap()], "vitamin d");
    }

    #[test]
    fn missing_or_blank_instruction_leaves_no_stray_space() {
        let t = Template::query(DEFAULT_QUERY_TEMPLATE).unwrap();
        assert_eq!(t.render_query(None, "vitamin d").text, "vitamin d");
        assert_eq!(t.render_query(Some(""), "vitamin d").text, "vitamin d");
        assert_eq!(t.render_query(Some("  "), "vitamin d").text, "vitamin d");
    }

    #[test]
    fn instruct_form_drops_label_without_instruction() {
        let t = Template::query("Instruct: {instruction}\nQuery: {query}").unwrap();
        assert_eq!(
            t.render_query(Some("be brief"), "q").text,
            "Instruct: be brief\nQuery: q"
        );
        let r = t.render_query(None, "q");
        assert_eq!(r.text, "q");
        assert_eq!(&r.text[r.query_span.unwrap()], "q");
    }

    #[test]
    fn instruction_first_form() {
        let t = Template::query("{instruction} {query}").unwrap();
        assert_eq!(t.render_query(Some("i"), "q").text, "i q");
        assert_eq!(t.render_query(None, "q").text, "q");
    }

    #[test]
    fn prefix_templates() {
        let t = Template::query("query: {query} {instruction}").unwrap();
        assert_eq!(t.render_query(None, "q").text, "query: q");
        let p = Template::passage("passage: {passage}").unwrap();
        assert_eq!(p.render_passage("text"), "passage: text");
    }

    #[test]
    fn literal_braces_survive() {
        let t = Template::query("{query} {x} {instruction}").unwrap();
        assert_eq!(t.render_query(Some("i"), "q").text, "q {x} i");
    }

    #[test]
    fn templates_without_their_slot_are_refused() {
        assert!(Template::query("{instruction}").is_err());
        assert!(Template::query("{query} {passage}").is_err());
        assert!(Template::passage("{query}").is_err());
        assert!(Template::passage("text").is_err());
    }
}
