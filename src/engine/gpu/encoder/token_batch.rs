//! One batch of tokenized texts as the encoders take it: right-padded to
//! the longest, ids checked against the vocabulary, each token's position
//! counted from its text's first token.

use crate::engine::embed::tokenize::TokenizedText;
use crate::engine::error::{EngineError, EngineResult};

pub struct TokenBatch {
    /// Real tokens per text.
    pub lengths: Vec<usize>,
    /// The longest text: every row of `ids` is this long.
    pub seq: usize,
    pub ids: Vec<u32>,
    pub types: Vec<u32>,
    pub positions: Vec<u32>,
}

impl TokenBatch {
    /// None for no texts. `type_vocab` None: token types are not used.
    pub fn right_padded(
        texts: &[&TokenizedText],
        vocab: usize,
        type_vocab: Option<usize>,
        max_positions: usize,
    ) -> EngineResult<Option<Self>> {
        let lengths: Vec<usize> = texts.iter().map(|t| t.len()).collect();
        let Some(&seq) = lengths.iter().max() else {
            return Ok(None);
        };
        if seq == 0 || seq > max_positions {
            return Err(EngineError::invalid(format!(
                "a text of {seq} tokens; this model takes 1 to {max_positions}"
            )));
        }
        let rows = texts.len() * seq;
        let (mut ids, mut types, mut positions) = (vec![0u32; rows], vec![0u32; rows], vec![0u32; rows]);
        for (b, t) in texts.iter().enumerate() {
            for (j, (&id, &ty)) in t.ids.iter().zip(&t.type_ids).enumerate() {
                let type_ok = type_vocab.is_none_or(|n| ty >= 0 && (ty as usize) < n);
                if id < 0 || id as usize >= vocab || !type_ok {
                    return Err(EngineError::invalid(format!(
                        "token id {id} (type {ty}) is outside the vocabulary"
                    )));
                }
                ids[b * seq + j] = id as u32;
                types[b * seq + j] = if type_vocab.is_some() { ty as u32 } else { 0 };
                positions[b * seq + j] = j as u32;
            }
        }
        Ok(Some(TokenBatch {
            lengths,
            seq,
            ids,
            types,
            positions,
        }))
    }

    pub fn rows(&self) -> usize {
        self.lengths.len() * self.seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(ids: &[i64]) -> TokenizedText {
        TokenizedText {
            ids: ids.to_vec(),
            type_ids: vec![0; ids.len()],
        }
    }

    #[test]
    fn pads_right_and_checks_ids() {
        let (a, b) = (text(&[5, 6, 7]), text(&[9]));
        let batch = TokenBatch::right_padded(&[&a, &b], 10, Some(2), 8).unwrap().unwrap();
        assert_eq!((batch.seq, batch.rows(), batch.lengths.clone()), (3, 6, vec![3, 1]));
        assert_eq!(batch.ids, vec![5, 6, 7, 9, 0, 0]);
        assert_eq!(batch.positions, vec![0, 1, 2, 0, 0, 0]);
        assert!(TokenBatch::right_padded(&[], 10, None, 8).unwrap().is_none());
        let e = |t: &TokenizedText| TokenBatch::right_padded(&[t], 10, Some(2), 2).err().unwrap().message;
        assert!(e(&text(&[1, 2, 3])).contains("takes 1 to 2"));
        assert!(e(&text(&[11])).contains("outside the vocabulary"));
        let typed = TokenizedText {
            ids: vec![1],
            type_ids: vec![3],
        };
        assert!(e(&typed).contains("(type 3)"));
        assert!(TokenBatch::right_padded(&[&typed], 10, None, 2).is_ok());
    }
}
