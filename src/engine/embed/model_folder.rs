//! Reads a sentence-transformers model folder: where the ONNX graph and the
//! tokenizer are, how to pool, the output dimension, the token limit and the
//! prompts. These become the defaults that registration stores.

use super::pooling::Pooling;
use super::template::{DEFAULT_PASSAGE_TEMPLATE, DEFAULT_QUERY_TEMPLATE};
use crate::engine::error::{EngineError, EngineResult};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Where to look for the ONNX graph, in order.
const ONNX_CANDIDATES: &[&str] = &["model.onnx", "onnx/model.onnx"];

/// What a folder says about itself; every field can be overridden at registration.
#[derive(Debug, Clone, PartialEq)]
pub struct FolderDefaults {
    pub folder: PathBuf,
    pub onnx_file: PathBuf,
    pub tokenizer_file: PathBuf,
    pub pooling: Pooling,
    pub dimension: usize,
    pub max_tokens: usize,
    pub pad_token_id: u32,
    pub query_template: String,
    pub passage_template: String,
}

#[derive(Deserialize)]
struct ModuleEntry {
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize, Default)]
struct PoolingConfig {
    word_embedding_dimension: Option<usize>,
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
}

#[derive(Deserialize, Default)]
struct TransformerConfig {
    hidden_size: Option<usize>,
    max_position_embeddings: Option<usize>,
    pad_token_id: Option<u32>,
}

#[derive(Deserialize, Default)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

#[derive(Deserialize, Default)]
struct SentenceTransformersConfig {
    #[serde(default)]
    prompts: std::collections::HashMap<String, String>,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> EngineResult<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| EngineError::files(format!("{} is not valid JSON for this field set: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(EngineError::files(format!("cannot read {}: {e}", path.display()))
            .with_hint("the folder and its files must be readable by the PostgreSQL server's OS user")),
    }
}

/// Inspect `folder` and derive the registration defaults.
pub fn inspect(folder: &Path) -> EngineResult<FolderDefaults> {
    if !folder.is_absolute() {
        return Err(
            EngineError::invalid(format!("model folder {} is not an absolute path", folder.display()))
                .with_hint("give the full path of the folder, as the server sees it"),
        );
    }
    if !folder.is_dir() {
        return Err(EngineError::files(format!(
            "model folder {} does not exist or is not readable",
            folder.display()
        ))
        .with_hint("scripts/setup.sh installs the default model under /var/lib/inf_ir/models"));
    }
    let onnx_file = ONNX_CANDIDATES
        .iter()
        .map(|c| folder.join(c))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            EngineError::files(format!("no model.onnx in {}", folder.display()))
                .with_hint("export the checkpoint with scripts/export_bert_onnx.py FOLDER")
        })?;
    let tokenizer_file = folder.join("tokenizer.json");
    if !tokenizer_file.is_file() {
        return Err(EngineError::files(format!("no tokenizer.json in {}", folder.display()))
            .with_hint("inf_ir needs the fast-tokenizer file that Hugging Face models ship"));
    }

    let modules: Vec<ModuleEntry> = read_json(&folder.join("modules.json"))?.unwrap_or_default();
    let pooling_dir = modules
        .iter()
        .find(|m| m.kind.ends_with("models.Pooling"))
        .map(|m| folder.join(&m.path))
        .unwrap_or_else(|| folder.join("1_Pooling"));
    let pooling_cfg: PoolingConfig = read_json(&pooling_dir.join("config.json"))?.unwrap_or_default();
    let transformer: TransformerConfig = read_json(&folder.join("config.json"))?.unwrap_or_default();
    let sbert: SentenceBertConfig = read_json(&folder.join("sentence_bert_config.json"))?.unwrap_or_default();
    let st: SentenceTransformersConfig =
        read_json(&folder.join("config_sentence_transformers.json"))?.unwrap_or_default();

    let pooling = if pooling_cfg.pooling_mode_max_tokens || pooling_cfg.pooling_mode_mean_sqrt_len_tokens {
        return Err(EngineError::files(format!(
            "{} asks for max or mean-sqrt-len pooling, which inf_ir does not implement",
            pooling_dir.display()
        ))
        .with_hint("register with pooling => 'mean', 'cls' or 'last' if that is what the model was trained with"));
    } else if pooling_cfg.pooling_mode_cls_token {
        Pooling::Cls
    } else if pooling_cfg.pooling_mode_lasttoken {
        Pooling::LastToken
    } else {
        // Mean is sentence-transformers' own default when no mode is set.
        let _ = pooling_cfg.pooling_mode_mean_tokens;
        Pooling::Mean
    };
    let dimension = pooling_cfg
        .word_embedding_dimension
        .or(transformer.hidden_size)
        .ok_or_else(|| {
            EngineError::files(format!("cannot tell the embedding dimension of {}", folder.display()))
                .with_hint("the folder needs 1_Pooling/config.json or config.json with hidden_size")
        })?;
    let max_tokens = sbert
        .max_seq_length
        .or(transformer.max_position_embeddings)
        .unwrap_or(512);

    let query_prefix = st.prompts.get("query").cloned().unwrap_or_default();
    let passage_prefix = ["passage", "document", "corpus"]
        .iter()
        .find_map(|k| st.prompts.get(*k).cloned())
        .unwrap_or_default();
    Ok(FolderDefaults {
        folder: folder.to_path_buf(),
        onnx_file,
        tokenizer_file,
        pooling,
        dimension,
        max_tokens,
        pad_token_id: transformer.pad_token_id.unwrap_or(0),
        query_template: format!("{query_prefix}{DEFAULT_QUERY_TEMPLATE}"),
        passage_template: format!("{passage_prefix}{DEFAULT_PASSAGE_TEMPLATE}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("inf_ir_folder_{name}_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
        std::fs::write(dir.join("model.onnx"), b"x").unwrap();
        std::fs::write(dir.join("tokenizer.json"), b"{}").unwrap();
        dir
    }

    #[test]
    fn reads_minilm_style_folder() {
        let dir = scratch("minilm");
        std::fs::write(
            dir.join("config.json"),
            r#"{"hidden_size":384,"pad_token_id":0,"max_position_embeddings":512}"#,
        )
        .unwrap();
        std::fs::write(dir.join("sentence_bert_config.json"), r#"{"max_seq_length":256}"#).unwrap();
        std::fs::write(
            dir.join("modules.json"),
            r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
                {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"}]"#,
        )
        .unwrap();
        std::fs::write(
            dir.join("1_Pooling/config.json"),
            r#"{"word_embedding_dimension":384,"pooling_mode_mean_tokens":true}"#,
        )
        .unwrap();
        let d = inspect(&dir).unwrap();
        assert_eq!(d.pooling, Pooling::Mean);
        assert_eq!(d.dimension, 384);
        assert_eq!(d.max_tokens, 256);
        assert_eq!(d.query_template, "{query} {instruction}");
        assert_eq!(d.passage_template, "{passage}");
    }

    #[test]
    fn prompts_become_template_prefixes() {
        let dir = scratch("e5");
        std::fs::write(dir.join("config.json"), r#"{"hidden_size":384}"#).unwrap();
        std::fs::write(
            dir.join("config_sentence_transformers.json"),
            r#"{"prompts":{"query":"query: ","passage":"passage: "}}"#,
        )
        .unwrap();
        std::fs::write(dir.join("1_Pooling/config.json"), r#"{"pooling_mode_cls_token":true}"#).unwrap();
        let d = inspect(&dir).unwrap();
        assert_eq!(d.pooling, Pooling::Cls);
        assert_eq!(d.query_template, "query: {query} {instruction}");
        assert_eq!(d.passage_template, "passage: {passage}");
        assert_eq!(d.max_tokens, 512);
    }

    #[test]
    fn missing_pieces_are_reported() {
        assert!(inspect(Path::new("relative/path")).is_err());
        let e = inspect(Path::new("/nonexistent/inf_ir/model")).unwrap_err();
        assert!(e.message.contains("does not exist"));
        let dir = scratch("noonnx");
        std::fs::remove_file(dir.join("model.onnx")).unwrap();
        assert!(inspect(&dir).unwrap_err().message.contains("no model.onnx"));
        let dir = scratch("badjson");
        std::fs::write(dir.join("config.json"), b"{not json").unwrap();
        assert!(inspect(&dir).unwrap_err().message.contains("not valid JSON"));
    }
}
