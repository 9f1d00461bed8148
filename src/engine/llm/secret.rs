//! API keys: where the server finds them, and a type that never prints one.
//!
//! A key is never stored in a table. An endpoint names an environment
//! variable of the server process, or a file that only the server's OS user
//! may read (like ssh's private keys: a file others can read is refused, so
//! a key left world-readable is noticed rather than used).

use std::os::unix::fs::MetadataExt;

/// A value that must not be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the secret (4 characters or more)
    /// masked, as it is and as a JSON string would escape it (an endpoint
    /// that echoes its request headers in a JSON reply).
    pub fn scrub(&self, text: &str) -> String {
        if self.0.len() < 4 {
            return text.to_string();
        }
        let mut scrubbed = text.replace(&self.0, "[redacted]");
        let escaped = serde_json::to_string(&self.0).expect("a string serializes");
        let escaped = &escaped[1..escaped.len() - 1];
        if escaped != self.0 {
            scrubbed = scrubbed.replace(escaped, "[redacted]");
        }
        if escaped.contains('/') {
            scrubbed = scrubbed.replace(&escaped.replace('/', "\\/"), "[redacted]");
        }
        scrubbed
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// The key in environment variable `name` (looked up by `lookup`); the
/// error says what is wrong without any value.
pub fn from_env(name: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<Secret, String> {
    match lookup(name).map(|v| v.trim().to_string()) {
        Some(v) if !v.is_empty() => Ok(Secret(v)),
        Some(_) => Err(format!("the server's environment variable {name} is empty")),
        None => Err(format!("the server's environment has no variable {name}")),
    }
}

/// The key in file `path` (trimmed), which must belong to this process's
/// OS user and be unreadable by anyone else.
pub fn from_file(path: &str) -> Result<Secret, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read the key file {path}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("the key file {path} is not a regular file"));
    }
    let uid = unsafe { libc::geteuid() };
    if meta.uid() != uid {
        return Err(format!("the key file {path} does not belong to the server's OS user"));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "the key file {path} may be read by other OS users (mode {:o})",
            meta.mode() & 0o777
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read the key file {path}: {e}"))?;
    let key = text.trim();
    if key.is_empty() {
        return Err(format!("the key file {path} is empty"));
    }
    Ok(Secret(key.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn never_printed_and_scrubbed() {
        let key = Secret::new("sk-live-abcdef123456");
        assert_eq!(format!("{key:?}"), "Secret([redacted])");
        assert_eq!(
            key.scrub("Incorrect API key provided: sk-live-abcdef123456."),
            "Incorrect API key provided: [redacted]."
        );
        assert_eq!(Secret::new("ab").scrub("ab ab"), "ab ab");
        // As a JSON string escapes it, with or without escaped slashes.
        let odd = Secret::new(r#"k/"ey\1"#);
        let echoed = serde_json::json!({ "authorization": format!("Bearer {}", odd.expose()) }).to_string();
        assert_eq!(odd.scrub(&echoed), r#"{"authorization":"Bearer [redacted]"}"#);
        assert_eq!(odd.scrub(r#"k\/\"ey\\1"#), "[redacted]");
    }

    #[test]
    fn environment() {
        let env = |name: &str| match name {
            "SET" => Some(" sk-1 \n".to_string()),
            "BLANK" => Some(" ".to_string()),
            _ => None,
        };
        assert_eq!(from_env("SET", env).unwrap().expose(), "sk-1");
        assert_eq!(
            from_env("BLANK", env).unwrap_err(),
            "the server's environment variable BLANK is empty"
        );
        assert_eq!(
            from_env("NONE", env).unwrap_err(),
            "the server's environment has no variable NONE"
        );
    }

    #[test]
    fn files_readable_by_others_are_refused() {
        let dir = std::env::temp_dir().join(format!("inf_ir_secret_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        std::fs::write(&path, "sk-file-key\n").unwrap();
        let p = path.to_str().unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = from_file(p).unwrap_err();
        assert!(e.contains("may be read by other OS users (mode 644)"), "{e}");
        assert!(!e.contains("sk-file-key"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(from_file(p).unwrap().expose(), "sk-file-key");
        assert!(from_file(dir.join("missing").to_str().unwrap()).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
