//! What a table-following corpus reads from each source row: the key that
//! names its passage, the text that is embedded, the columns copied into
//! the passage's metadata.

use crate::engine::EngineError;

/// One column of the source's key, with its type as `format_type` spells it
/// (keys travel as text and are cast back to this type to use the key's index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyColumn {
    pub name: String,
    pub sql_type: String,
    /// The column's number in the table (stays the same when it is renamed).
    pub attnum: i16,
}

/// A corpus's source table and columns, checked against the catalog by the
/// caller (names exist, text columns are strings, the key is unique).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSpec {
    pub corpus_id: i32,
    /// The table, schema-qualified and quoted (`regclass::text` with the schema).
    pub table: String,
    pub key: Vec<KeyColumn>,
    pub text: Vec<String>,
    pub metadata: Vec<String>,
    /// A partitioned table: its rows live in partitions, whose column
    /// numbers may differ from the parent's.
    pub partitioned: bool,
}

impl SourceSpec {
    /// Column lists a corpus can be made from: a key, at least one text
    /// column, no column named twice in one list, no key column as text.
    pub fn check(&self) -> Result<(), EngineError> {
        if self.key.is_empty() {
            return Err(EngineError::invalid("the source has no key columns")
                .with_hint("name the key with id => ARRAY['id'], or give the table a primary key"));
        }
        if self.text.is_empty() {
            return Err(EngineError::invalid("text must name at least one column of the source")
                .with_hint("e.g. text => ARRAY['title', 'body']: their values, joined by spaces, are embedded"));
        }
        let key_names: Vec<String> = self.key.iter().map(|k| k.name.clone()).collect();
        for (list, names) in [("id", &key_names), ("text", &self.text), ("metadata", &self.metadata)] {
            if let Some(dup) = first_duplicate(names) {
                return Err(EngineError::invalid(format!("column \"{dup}\" is named twice in {list}"))
                    .with_hint("name each column once"));
            }
        }
        if let Some(both) = self.text.iter().find(|t| self.metadata.contains(t)) {
            return Err(EngineError::invalid(format!("column \"{both}\" is named both as text and as metadata"))
                .with_hint("text columns are embedded; metadata columns are copied for filters; pick one"));
        }
        Ok(())
    }
}

fn first_duplicate(names: &[String]) -> Option<&str> {
    names
        .iter()
        .enumerate()
        .find(|(i, n)| names[..*i].contains(n))
        .map(|(_, n)| n.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SourceSpec {
        SourceSpec {
            corpus_id: 3,
            table: "public.docs".into(),
            key: vec![KeyColumn { name: "id".into(), sql_type: "bigint".into(), attnum: 1 }],
            text: vec!["title".into(), "body".into()],
            metadata: vec!["lang".into()],
            partitioned: false,
        }
    }

    #[test]
    fn a_plain_spec_passes() {
        assert!(spec().check().is_ok());
    }

    #[test]
    fn refusals_name_the_column() {
        let mut s = spec();
        s.text.clear();
        assert!(s.check().unwrap_err().message.contains("at least one column"));
        let mut s = spec();
        s.text.push("title".into());
        assert!(s.check().unwrap_err().message.contains("\"title\" is named twice in text"));
        let mut s = spec();
        s.metadata.push("body".into());
        assert!(s.check().unwrap_err().message.contains("both as text and as metadata"));
        let mut s = spec();
        s.key.clear();
        assert!(s.check().unwrap_err().message.contains("no key columns"));
    }
}
