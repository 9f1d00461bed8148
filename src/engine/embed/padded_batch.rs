//! The arrays one ONNX run takes: token ids padded on the right, the
//! attention mask, token types, and position ids for decoder graphs, which
//! take them as an input (encoders make their own).

use super::tokenize::TokenizedText;
use ndarray::Array2;

pub struct PaddedBatch {
    pub ids: Array2<i64>,
    pub mask: Array2<i64>,
    pub types: Array2<i64>,
    /// Each real token's place, from 0; padding repeats the last real one,
    /// as transformers makes them from the mask (cumsum - 1, clipped at 0).
    pub positions: Array2<i64>,
}

impl PaddedBatch {
    pub fn new(texts: &[&TokenizedText], pad_token_id: i64) -> Self {
        let rows = texts.len();
        let width = texts.iter().map(|t| t.len()).max().unwrap_or(1).max(1);
        let mut ids = Array2::<i64>::from_elem((rows, width), pad_token_id);
        let mut mask = Array2::<i64>::zeros((rows, width));
        let mut types = Array2::<i64>::zeros((rows, width));
        let mut positions = Array2::<i64>::zeros((rows, width));
        for (r, t) in texts.iter().enumerate() {
            for (c, (&id, &ty)) in t.ids.iter().zip(&t.type_ids).enumerate() {
                ids[[r, c]] = id;
                mask[[r, c]] = 1;
                types[[r, c]] = ty;
            }
            let last = t.len().saturating_sub(1) as i64;
            for c in 0..width {
                positions[[r, c]] = (c as i64).min(last);
            }
        }
        PaddedBatch {
            ids,
            mask,
            types,
            positions,
        }
    }

    pub fn width(&self) -> usize {
        self.ids.ncols()
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
        let batch = PaddedBatch::new(&[&a, &b], 2);
        assert_eq!(batch.width(), 3);
        assert_eq!(batch.ids.row(1).to_vec(), vec![8, 2, 2]);
        assert_eq!(batch.mask.row(1).to_vec(), vec![1, 0, 0]);
        assert_eq!(batch.positions.row(0).to_vec(), vec![0, 1, 2]);
        // Padding after the last real token keeps its place (cumsum(mask) - 1).
        assert_eq!(batch.positions.row(1).to_vec(), vec![0, 0, 0]);
    }

    #[test]
    fn an_empty_batch_row_is_one_pad() {
        let empty = text(&[]);
        let batch = PaddedBatch::new(&[&empty], 0);
        assert_eq!(batch.width(), 1);
        assert_eq!(batch.mask.row(0).to_vec(), vec![0]);
        assert_eq!(batch.positions.row(0).to_vec(), vec![0]);
    }
}
