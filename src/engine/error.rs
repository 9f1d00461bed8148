//! One error type for the engine, carrying a hint for the person who sees it.
//! The SQL layer maps `kind` to an SQLSTATE; nothing here knows about PostgreSQL.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ErrorKind {
    /// The caller passed something unusable (bad template, mismatched arrays).
    InvalidInput,
    /// A model folder is missing, unreadable or its config is inconsistent.
    ModelFiles,
    /// The ONNX Runtime library could not be loaded or is the wrong version.
    Runtime,
    /// ONNX Runtime or the tokenizer failed while embedding.
    Inference,
    /// The caller asked to stop (query cancel, statement_timeout).
    Cancelled,
    /// The shared inference worker is not running or ended during a call.
    Worker,
    /// A model would not fit in the memory left (checked before loading).
    OutOfMemory,
    /// A CUDA device could not be used (no driver or library, a device
    /// fault); the caller searches or embeds on the CPU instead.
    Device,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EngineError {
    pub kind: ErrorKind,
    pub message: String,
    pub hint: Option<String>,
}

impl EngineError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        EngineError {
            kind,
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    pub fn files(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::ModelFiles, message)
    }

    pub fn inference(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Inference, message)
    }

    pub fn worker(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Worker, message)
    }

    pub fn resources(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::OutOfMemory, message)
    }

    pub fn cancelled() -> Self {
        Self::new(ErrorKind::Cancelled, "embedding was cancelled")
    }
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for EngineError {}

pub type EngineResult<T> = Result<T, EngineError>;
