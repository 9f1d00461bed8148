//! Tokenization with the model's own `tokenizer.json`, under inf_ir's rules:
//! the file's own truncation and padding are ignored; texts are cut to the
//! model's token limit; on the query side the instruction is kept whole and
//! the query is cut; huge texts are pre-cut so that a 1 MB text costs what a
//! few kilobytes cost.

use super::template::Rendered;
use crate::engine::error::{EngineError, EngineResult};
use std::path::Path;
use tokenizers::{Encoding, PostProcessor, Tokenizer, TruncationDirection};

/// Token ids of one text, special tokens included, unpadded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedText {
    pub ids: Vec<i64>,
    pub type_ids: Vec<i64>,
}

impl TokenizedText {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Texts up to this many bytes per allowed token are tokenized whole; longer
/// ones are pre-cut first. (A WordPiece token averages 4 to 6 bytes of English.)
const PRECUT_MIN_BYTES_PER_TOKEN: usize = 32;

pub struct TextEncoder {
    tokenizer: Tokenizer,
    max_tokens: usize,
    /// How many special tokens ([CLS], [SEP], ...) the post-processor adds.
    special_tokens: usize,
}

impl TextEncoder {
    pub fn load(path: &Path, max_tokens: usize) -> EngineResult<Self> {
        let mut tokenizer = Tokenizer::from_file(path).map_err(|e| {
            EngineError::files(format!("cannot load tokenizer {}: {e}", path.display()))
                .with_hint("the file must be a Hugging Face fast-tokenizer tokenizer.json")
        })?;
        // Our own limits replace the file's (MiniLM's file pads everything to 128).
        tokenizer
            .with_truncation(None)
            .map_err(|e| EngineError::files(format!("tokenizer {}: {e}", path.display())))?;
        tokenizer.with_padding(None);
        let special_tokens = tokenizer.get_post_processor().map_or(0, |p| p.added_tokens(false));
        if max_tokens <= special_tokens {
            return Err(EngineError::invalid(format!(
                "max_tokens {max_tokens} leaves no room beside {special_tokens} special tokens"
            )));
        }
        Ok(TextEncoder {
            tokenizer,
            max_tokens,
            special_tokens,
        })
    }

    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Tokens available for content once the special tokens are placed.
    fn content_budget(&self) -> usize {
        self.max_tokens - self.special_tokens
    }

    fn encode_plain(&self, text: &str) -> EngineResult<Encoding> {
        self.tokenizer
            .encode(text, false)
            .map_err(|e| EngineError::inference(format!("tokenizer failed: {e}")))
    }

    /// The shortest whitespace-bounded prefix of `text` that already holds more
    /// tokens than fit, or the whole text. Tokenizing that prefix gives the same
    /// first tokens as tokenizing the whole text, because the pre-tokenizer
    /// splits at whitespace, so truncation stays exact and a 1 MB text costs
    /// what a few kilobytes cost.
    pub fn precut<'a>(&self, text: &'a str) -> EngineResult<&'a str> {
        let budget = self.content_budget();
        // Ordinary texts are tokenized once, whole; only long ones are probed.
        if text.len() <= budget * PRECUT_MIN_BYTES_PER_TOKEN {
            return Ok(text);
        }
        let mut window = budget * 8;
        while window < text.len() {
            let cut = whitespace_cut(text, window);
            if self.encode_plain(&text[..cut])?.len() > budget {
                return Ok(&text[..cut]);
            }
            window *= 2;
        }
        Ok(text)
    }

    /// A passage (already rendered through its template): keep the first tokens.
    pub fn encode_passage(&self, text: &str) -> EngineResult<TokenizedText> {
        let mut enc = self.encode_plain(self.precut(text)?)?;
        if enc.len() > self.content_budget() {
            enc.truncate(self.content_budget(), 0, TruncationDirection::Right);
        }
        self.finish(enc)
    }

    /// A rendered query. When it is too long, tokens are removed from the end
    /// of the query part first, so the instruction survives whole; only when
    /// the instruction alone is too long is the rest cut from the end.
    pub fn encode_query(&self, rendered: &Rendered) -> EngineResult<TokenizedText> {
        let enc = self.encode_plain(&rendered.text)?;
        let budget = self.content_budget();
        if enc.len() <= budget {
            return self.finish(enc);
        }
        let mut keep = vec![true; enc.len()];
        let mut excess = enc.len() - budget;
        if let Some(span) = &rendered.query_span {
            let query_tokens: Vec<usize> = enc
                .get_offsets()
                .iter()
                .enumerate()
                .filter(|(_, (start, _))| span.contains(start))
                .map(|(i, _)| i)
                .collect();
            for &i in query_tokens.iter().rev().take(excess) {
                keep[i] = false;
            }
            excess -= excess.min(query_tokens.len());
        }
        // Still too long: the instruction alone exceeds the limit; cut from the end.
        for k in keep.iter_mut().rev().filter(|k| **k).take(excess) {
            *k = false;
        }
        self.finish(select_tokens(&enc, &keep))
    }

    /// Add the special tokens as the tokenizer's post-processor defines them.
    fn finish(&self, enc: Encoding) -> EngineResult<TokenizedText> {
        let enc = self
            .tokenizer
            .post_process(enc, None, true)
            .map_err(|e| EngineError::inference(format!("tokenizer post-processing failed: {e}")))?;
        Ok(TokenizedText {
            ids: enc.get_ids().iter().map(|&i| i as i64).collect(),
            type_ids: enc.get_type_ids().iter().map(|&i| i as i64).collect(),
        })
    }
}

/// Byte index at or before `at` to cut `text`: just after a whitespace
/// character when there is one in the second half of the window, else the
/// nearest char boundary (a text with no spaces at all).
fn whitespace_cut(text: &str, at: usize) -> usize {
    let mut end = at.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    match text[..end].rfind(char::is_whitespace) {
        Some(ws) if ws >= end / 2 => ws,
        _ => end,
    }
}

fn select_tokens(enc: &Encoding, keep: &[bool]) -> Encoding {
    fn pick<T: Clone>(v: &[T], keep: &[bool]) -> Vec<T> {
        v.iter()
            .zip(keep)
            .filter(|(_, k)| **k)
            .map(|(x, _)| x.clone())
            .collect()
    }
    let n = keep.iter().filter(|k| **k).count();
    Encoding::new(
        pick(enc.get_ids(), keep),
        pick(enc.get_type_ids(), keep),
        pick(enc.get_tokens(), keep),
        pick(enc.get_word_ids(), keep),
        pick(enc.get_offsets(), keep),
        vec![0; n],
        vec![1; n],
        Vec::new(),
        Default::default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_cut_prefers_spaces() {
        assert_eq!(whitespace_cut("hello world again", 13), 11);
        assert_eq!(whitespace_cut("abcdefgh", 5), 5);
        // never splits a multi-byte char
        let s = "ééééé";
        assert!(s.is_char_boundary(whitespace_cut(s, 3)));
        assert_eq!(whitespace_cut("short", 100), 5);
    }
}
