//! The arrays one ONNX run takes: token ids padded on the model's side, the
//! attention mask, token types, and position ids for decoder graphs, which
//! take them as an input (encoders make their own).

use super::tokenize::TokenizedText;
use crate::engine::error::{EngineError, EngineResult};
use ndarray::Array2;
use std::ops::Range;

/// Where padding goes in a row. Decoder embedders are often trained with
/// left padding (the last column is every row's last token); with position
/// ids from the mask a causal graph gives the same states either way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PaddingSide {
    #[default]
    Right,
    Left,
}

impl PaddingSide {
    pub fn name(self) -> &'static str {
        match self {
            PaddingSide::Right => "right",
            PaddingSide::Left => "left",
        }
    }

    pub fn parse(s: &str) -> EngineResult<Self> {
        match s.to_ascii_lowercase().as_str() {
            "right" => Ok(PaddingSide::Right),
            "left" => Ok(PaddingSide::Left),
            other => Err(EngineError::invalid(format!("unknown padding side {other:?}"))
                .with_hint("padding_side is 'right' or 'left'")),
        }
    }
}

pub struct PaddedBatch {
    pub ids: Array2<i64>,
    pub mask: Array2<i64>,
    pub types: Array2<i64>,
    /// Each real token's place, from 0 (cumsum of the mask - 1, as
    /// transformers makes them); padding repeats a real token's place.
    pub positions: Array2<i64>,
    /// The columns that hold each row's real tokens.
    real: Vec<Range<usize>>,
}

impl PaddedBatch {
    pub fn new(texts: &[&TokenizedText], pad_token_id: i64, side: PaddingSide) -> Self {
        let rows = texts.len();
        let width = texts.iter().map(|t| t.len()).max().unwrap_or(1).max(1);
        let mut ids = Array2::<i64>::from_elem((rows, width), pad_token_id);
        let mut mask = Array2::<i64>::zeros((rows, width));
        let mut types = Array2::<i64>::zeros((rows, width));
        let mut positions = Array2::<i64>::zeros((rows, width));
        let mut real = Vec::with_capacity(rows);
        for (r, t) in texts.iter().enumerate() {
            let start = match side {
                PaddingSide::Right => 0,
                PaddingSide::Left => width - t.len(),
            };
            for (i, (&id, &ty)) in t.ids.iter().zip(&t.type_ids).enumerate() {
                ids[[r, start + i]] = id;
                mask[[r, start + i]] = 1;
                types[[r, start + i]] = ty;
            }
            let last = t.len().saturating_sub(1) as i64;
            for c in 0..width {
                positions[[r, c]] = (c as i64 - start as i64).clamp(0, last);
            }
            real.push(start..start + t.len());
        }
        PaddedBatch {
            ids,
            mask,
            types,
            positions,
            real,
        }
    }

    pub fn width(&self) -> usize {
        self.ids.ncols()
    }

    /// Row `row`'s real tokens (at least one column, so pooling has a row).
    pub fn real_tokens(&self, row: usize) -> Range<usize> {
        let r = self.real[row].clone();
        if r.is_empty() {
            let at = r.start.min(self.width() - 1);
            return at..at + 1;
        }
        r
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
    fn right_padding_with_positions_from_the_mask() {
        let (a, b) = (text(&[5, 6, 7]), text(&[8]));
        let batch = PaddedBatch::new(&[&a, &b], 2, PaddingSide::Right);
        assert_eq!(batch.width(), 3);
        assert_eq!(batch.ids.row(1).to_vec(), vec![8, 2, 2]);
        assert_eq!(batch.mask.row(1).to_vec(), vec![1, 0, 0]);
        assert_eq!(batch.positions.row(0).to_vec(), vec![0, 1, 2]);
        // Padding after the last real token keeps its place (cumsum(mask) - 1).
        assert_eq!(batch.positions.row(1).to_vec(), vec![0, 0, 0]);
        assert_eq!(batch.real_tokens(0), 0..3);
        assert_eq!(batch.real_tokens(1), 0..1);
    }

    #[test]
    fn left_padding_puts_every_last_token_in_the_last_column() {
        let (a, b) = (text(&[5, 6, 7]), text(&[8, 9]));
        let batch = PaddedBatch::new(&[&a, &b], 2, PaddingSide::Left);
        assert_eq!(batch.ids.row(1).to_vec(), vec![2, 8, 9]);
        assert_eq!(batch.mask.row(1).to_vec(), vec![0, 1, 1]);
        // Real tokens count from 0 wherever they start.
        assert_eq!(batch.positions.row(1).to_vec(), vec![0, 0, 1]);
        assert_eq!(batch.positions.row(0).to_vec(), vec![0, 1, 2]);
        assert_eq!(batch.real_tokens(1), 1..3);
        assert_eq!(batch.real_tokens(0).end, batch.real_tokens(1).end);
    }

    #[test]
    fn an_empty_batch_row_is_one_pad() {
        let empty = text(&[]);
        for side in [PaddingSide::Right, PaddingSide::Left] {
            let batch = PaddedBatch::new(&[&empty], 0, side);
            assert_eq!(batch.width(), 1);
            assert_eq!(batch.mask.row(0).to_vec(), vec![0]);
            assert_eq!(batch.positions.row(0).to_vec(), vec![0]);
            assert_eq!(batch.real_tokens(0), 0..1);
        }
    }

    #[test]
    fn side_names_round_trip() {
        for side in [PaddingSide::Right, PaddingSide::Left] {
            assert_eq!(PaddingSide::parse(side.name()).unwrap(), side);
        }
        assert_eq!(PaddingSide::parse("Left").unwrap(), PaddingSide::Left);
        assert!(PaddingSide::parse("middle").is_err());
    }
}
