//! A fingerprint of the files that define a model's embeddings: if any of
//! them changes, vectors made before are no longer comparable.

use crate::engine::error::{EngineError, EngineResult};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// SHA-256 over each file's name and content, in the given order; the first
/// 16 bytes in hex. Missing optional files contribute their name only.
pub fn fingerprint(folder: &Path, files: &[&Path]) -> EngineResult<String> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    for file in files {
        let rel = file.strip_prefix(folder).unwrap_or(file);
        hasher.update(rel.to_string_lossy().as_bytes());
        hasher.update([0u8]);
        let mut f = match std::fs::File::open(file) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(EngineError::files(format!("cannot read {}: {e}", file.display()))),
        };
        loop {
            let n = f
                .read(&mut buffer)
                .map_err(|e| EngineError::files(format!("cannot read {}: {e}", file.display())))?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
        }
    }
    Ok(hasher.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect())
}

/// The files whose content defines a model's vectors.
pub fn model_files(folder: &Path, onnx: &Path, tokenizer: &Path) -> Vec<PathBuf> {
    let mut files = vec![onnx.to_path_buf(), tokenizer.to_path_buf()];
    for extra in [
        "config.json",
        "modules.json",
        "1_Pooling/config.json",
        "sentence_bert_config.json",
    ] {
        files.push(folder.join(extra));
    }
    files
}

/// The fingerprint of a model folder as registered (ONNX file, tokenizer, configs).
pub fn model_fingerprint(folder: &Path, onnx: &Path, tokenizer: &Path) -> EngineResult<String> {
    let files = model_files(folder, onnx, tokenizer);
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    fingerprint(folder, &refs)
}

/// Refuse to load a model whose files changed since registration: its
/// vectors would not be comparable with the stored ones.
pub fn check_model_unchanged(
    name: &str,
    folder: &Path,
    onnx: &Path,
    tokenizer: &Path,
    registered: &str,
) -> EngineResult<()> {
    let now = model_fingerprint(folder, onnx, tokenizer)?;
    if now != registered {
        return Err(EngineError::files(format!(
            "the files of model \"{name}\" changed since it was registered (fingerprint {registered} is now {now})"
        ))
        .with_hint("vectors made before are not comparable: re-register it with inf_register_model(), then re-embed"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_with_content_and_is_stable() {
        let dir = std::env::temp_dir().join(format!("inf_ir_fp_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = dir.join("a.bin");
        std::fs::write(&a, b"one").unwrap();
        let f1 = fingerprint(&dir, &[&a]).unwrap();
        assert_eq!(f1, fingerprint(&dir, &[&a]).unwrap());
        assert_eq!(f1.len(), 32);
        std::fs::write(&a, b"two").unwrap();
        assert_ne!(f1, fingerprint(&dir, &[&a]).unwrap());
    }
}
