//! Reads a sentence-transformers model folder: where the ONNX graph and the
//! tokenizer are, how to pool, the output dimension, the token limit and the
//! prompts. These become the defaults that registration stores.

use super::padded_batch::PaddingSide;
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
    /// None when the folder does not say and is a decoder: mean pooling,
    /// sentence-transformers' default, would be wrong there.
    pub pooling: Option<Pooling>,
    pub dimension: usize,
    pub max_tokens: usize,
    pub pad_token_id: u32,
    pub query_template: String,
    pub passage_template: String,
    pub padding_side: PaddingSide,
}

impl FolderDefaults {
    /// The pooling to register: the caller's, else the folder's; a decoder
    /// folder that names none is an error rather than a silent mean.
    pub fn pooling_or(&self, explicit: Option<Pooling>) -> EngineResult<Pooling> {
        explicit.or(self.pooling).ok_or_else(|| {
            EngineError::files(format!(
                "{} is a decoder (config.json) and has no 1_Pooling/config.json saying how to pool",
                self.folder.display()
            ))
            .with_hint(
                "decoder embedders (InF-Embed, Qwen3-Embedding, Promptriever, e5-mistral) pool the last token: \
                 register with pooling => 'last', or add 1_Pooling/config.json with \"pooling_mode_lasttoken\": true",
            )
        })
    }
}

/// Model types of causal LMs that embedders are built on; an optimum export
/// of one carries no pooling config.
const DECODER_MODEL_TYPES: &[&str] = &[
    "llama", "qwen2", "qwen3", "mistral", "mixtral", "gemma", "gemma2", "gemma3", "gemma3_text", "phi", "phi3",
    "gpt2", "gpt_neox", "falcon", "olmo", "olmo2", "stablelm", "starcoder2", "granite", "smollm3",
];

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
    model_type: Option<String>,
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    is_decoder: bool,
}

impl TransformerConfig {
    fn is_decoder(&self) -> bool {
        self.is_decoder
            || self.model_type.as_deref().is_some_and(|t| DECODER_MODEL_TYPES.contains(&t))
            || self.architectures.iter().any(|a| a.ends_with("ForCausalLM"))
    }
}

#[derive(Deserialize, Default)]
struct TokenizerConfig {
    padding_side: Option<String>,
    #[serde(default)]
    add_eos_token: bool,
    eos_token: Option<serde_json::Value>,
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

    let tokenizer_config_file = folder.join("tokenizer_config.json");
    let tokenizer_cfg: TokenizerConfig = read_json(&tokenizer_config_file)?.unwrap_or_default();
    let is_decoder = transformer.is_decoder();
    let says_pooling = pooling_cfg.pooling_mode_cls_token
        || pooling_cfg.pooling_mode_lasttoken
        || pooling_cfg.pooling_mode_mean_tokens
        || pooling_cfg.pooling_mode_max_tokens
        || pooling_cfg.pooling_mode_mean_sqrt_len_tokens;
    let pooling = if is_decoder && !says_pooling {
        None
    } else if pooling_cfg.pooling_mode_max_tokens || pooling_cfg.pooling_mode_mean_sqrt_len_tokens {
        return Err(EngineError::files(format!(
            "{} asks for max or mean-sqrt-len pooling, which inf_ir does not implement",
            pooling_dir.display()
        ))
        .with_hint("register with pooling => 'mean', 'cls' or 'last' if that is what the model was trained with"));
    } else if pooling_cfg.pooling_mode_cls_token {
        Some(Pooling::Cls)
    } else if pooling_cfg.pooling_mode_lasttoken {
        Some(Pooling::LastToken)
    } else {
        // Mean is sentence-transformers' own default when no mode is set.
        Some(Pooling::Mean)
    };
    let padding_side = tokenizer_cfg
        .padding_side
        .as_deref()
        .map(PaddingSide::parse)
        .transpose()
        .map_err(|e| EngineError::files(format!("{}: {}", tokenizer_config_file.display(), e.message)))?
        .unwrap_or_default();
    if tokenizer_cfg.add_eos_token {
        check_eos_appended(&tokenizer_file, &tokenizer_config_file, tokenizer_cfg.eos_token.as_ref())?;
    }
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
        padding_side,
    })
}

/// transformers' slow tokenizers append EOS when tokenizer_config.json says
/// `add_eos_token`; the tokenizers library does only what tokenizer.json's
/// post-processor says. If it does not append EOS, last-token pooling would
/// pool a different token than the model was trained on: refuse.
fn check_eos_appended(tokenizer_file: &Path, config_file: &Path, eos: Option<&serde_json::Value>) -> EngineResult<()> {
    let eos = match eos {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Object(o)) => o.get("content").and_then(|c| c.as_str()).unwrap_or_default().to_string(),
        _ => String::new(),
    };
    let tokenizer: serde_json::Value = read_json(tokenizer_file)?.unwrap_or_default();
    let post = tokenizer.get("post_processor").map(|p| p.to_string()).unwrap_or_default();
    let appended = !eos.is_empty() && post.contains(&serde_json::Value::String(eos.clone()).to_string());
    if appended {
        return Ok(());
    }
    Err(EngineError::files(format!(
        "{} sets add_eos_token, but {}'s post_processor does not append {}",
        config_file.display(),
        tokenizer_file.display(),
        if eos.is_empty() { "an EOS token".to_string() } else { format!("{eos:?}") }
    ))
    .with_hint(
        "save the tokenizer again with a post-processor that appends EOS (transformers: tokenizer.save_pretrained \
         after setting add_eos_token; scripts/export_decoder_onnx.py --append-eos), or end both templates \
         with the EOS token's text and drop add_eos_token",
    ))
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
        assert_eq!(d.pooling, Some(Pooling::Mean));
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
        assert_eq!(d.pooling, Some(Pooling::Cls));
        assert_eq!(d.query_template, "query: {query} {instruction}");
        assert_eq!(d.passage_template, "passage: {passage}");
        assert_eq!(d.max_tokens, 512);
    }

    #[test]
    fn an_optimum_decoder_export_needs_its_pooling_said() {
        // optimum-cli export onnx --task feature-extraction: config.json and
        // tokenizer files, no sentence-transformers modules.
        let dir = scratch("optimum");
        std::fs::remove_dir_all(dir.join("1_Pooling")).unwrap();
        std::fs::write(
            dir.join("config.json"),
            r#"{"model_type":"qwen2","architectures":["Qwen2ForCausalLM"],"hidden_size":1536,"max_position_embeddings":32768}"#,
        )
        .unwrap();
        std::fs::write(dir.join("tokenizer_config.json"), r#"{"padding_side":"left"}"#).unwrap();
        let d = inspect(&dir).unwrap();
        assert_eq!(d.pooling, None);
        assert_eq!(d.padding_side, PaddingSide::Left);
        assert_eq!(d.dimension, 1536);
        let e = d.pooling_or(None).unwrap_err();
        assert!(e.message.contains("is a decoder") && e.message.contains(&dir.display().to_string()));
        assert!(e.hint.unwrap().contains("pooling => 'last'"));
        assert_eq!(d.pooling_or(Some(Pooling::LastToken)).unwrap(), Pooling::LastToken);
        // An encoder folder without pooling config keeps sentence-transformers' mean.
        std::fs::write(dir.join("config.json"), r#"{"model_type":"bert","hidden_size":384}"#).unwrap();
        assert_eq!(inspect(&dir).unwrap().pooling_or(None).unwrap(), Pooling::Mean);
    }

    #[test]
    fn add_eos_token_must_be_in_the_post_processor() {
        let dir = scratch("eos");
        std::fs::write(dir.join("config.json"), r#"{"model_type":"llama","hidden_size":8}"#).unwrap();
        std::fs::write(
            dir.join("tokenizer_config.json"),
            r#"{"add_eos_token":true,"eos_token":{"content":"</s>","special":true}}"#,
        )
        .unwrap();
        std::fs::write(
            dir.join("tokenizer.json"),
            r#"{"post_processor":{"type":"ByteLevel","trim_offsets":false}}"#,
        )
        .unwrap();
        let e = inspect(&dir).unwrap_err();
        assert!(e.message.contains("add_eos_token") && e.message.contains("\"</s>\""), "{}", e.message);
        assert!(e.hint.unwrap().contains("--append-eos"));
        std::fs::write(
            dir.join("tokenizer.json"),
            r#"{"post_processor":{"type":"TemplateProcessing","single":[{"Sequence":{"id":"A","type_id":0}},
                {"SpecialToken":{"id":"</s>","type_id":0}}],"special_tokens":{"</s>":{"id":"</s>","ids":[2],"tokens":["</s>"]}}}}"#,
        )
        .unwrap();
        assert!(inspect(&dir).is_ok());
    }

    #[test]
    fn a_bad_padding_side_names_the_file() {
        let dir = scratch("padside");
        std::fs::write(dir.join("config.json"), r#"{"hidden_size":8}"#).unwrap();
        std::fs::write(dir.join("tokenizer_config.json"), r#"{"padding_side":"middle"}"#).unwrap();
        let e = inspect(&dir).unwrap_err();
        assert!(e.message.contains("tokenizer_config.json") && e.message.contains("middle"));
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
