//! A stored judgment is reused only for the same model, prompt version and
//! texts: its key is the SHA-256 of each part, so the cache table holds no
//! text and a changed passage never meets an old judgment.

use sha2::{Digest, Sha256};

/// Hex SHA-256 of a text.
pub fn text_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The key of one judgment: model, mode and prompt version in the clear
/// (so a cache can be inspected and pruned by them), the texts hashed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JudgmentKey {
    pub model: String,
    pub mode: String,
    pub prompt_version: i32,
    pub instruction_hash: String,
    pub query_hash: String,
    pub passage_hash: String,
}

impl JudgmentKey {
    pub fn new(model: &str, mode: &str, prompt_version: i32, instruction: &str, query: &str, passage: &str) -> Self {
        JudgmentKey {
            model: model.to_string(),
            mode: mode.to_string(),
            prompt_version,
            instruction_hash: text_hash(instruction),
            query_hash: text_hash(query),
            passage_hash: text_hash(passage),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_by_every_part() {
        let k = JudgmentKey::new("m", "logprobs", 1, "only reviews", "cats", "Cats sleep.");
        assert_eq!(k.query_hash, text_hash("cats"));
        assert_eq!(
            text_hash(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let others = [
            JudgmentKey::new("m2", "logprobs", 1, "only reviews", "cats", "Cats sleep."),
            JudgmentKey::new("m", "graded", 1, "only reviews", "cats", "Cats sleep."),
            JudgmentKey::new("m", "logprobs", 2, "only reviews", "cats", "Cats sleep."),
            JudgmentKey::new("m", "logprobs", 1, "only reviews.", "cats", "Cats sleep."),
            JudgmentKey::new("m", "logprobs", 1, "only reviews", "cats ", "Cats sleep."),
            JudgmentKey::new("m", "logprobs", 1, "only reviews", "cats", "Cats sleep"),
        ];
        for other in others {
            assert_ne!(k, other);
        }
    }
}
