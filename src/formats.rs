//! File formats of the dataset and corpus loaders, pure: JSONL with line
//! numbers in errors, qrels TSV, and the released InF-IR row.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// A parse failure, 1-based line number and what went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

/// Parse every non-blank line as `T`; the first bad line is the error.
pub fn parse_jsonl<T: DeserializeOwned>(content: &str) -> Result<Vec<T>, LineError> {
    content
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| LineError {
                line: i + 1,
                message: e.to_string(),
            })
        })
        .collect()
}

/// `query-id<TAB>doc-id<TAB>relevance` lines; a header line is skipped.
pub fn parse_qrels(content: &str) -> Result<Vec<(String, String, i32)>, LineError> {
    let mut out = Vec::new();
    for (i, line) in content.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let bad = |m: &str| LineError {
            line: i + 1,
            message: m.to_string(),
        };
        if fields.len() < 3 {
            return Err(bad("expected 3 tab-separated fields: query id, document id, relevance"));
        }
        // TREC layout `qid 0 docid rel` has 4 fields.
        let (q, d, r) = if fields.len() == 4 {
            (fields[0], fields[2], fields[3])
        } else {
            (fields[0], fields[1], fields[2])
        };
        match r.trim().parse::<i32>() {
            Ok(rel) => out.push((q.trim().to_string(), d.trim().to_string(), rel)),
            Err(_) if i == 0 => continue, // header
            Err(_) => return Err(bad(&format!("relevance {r:?} is not an integer"))),
        }
    }
    Ok(out)
}

/// A JSON id may be a string or a number; keep its text.
pub fn id_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One released InF-IR row; field order is the export's key order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InfIrRow {
    pub query_positive: String,
    pub instruction_positive: String,
    pub document_positive: String,
    pub query_negative: Option<String>,
    pub instruction_negative: Option<String>,
    pub hard_negative_document_1: Option<String>,
    pub hard_negative_document_2: Option<String>,
}

impl InfIrRow {
    /// A row must carry its positive, and each negative with its passage:
    /// instruction_negative with hard_negative_document_1, query_negative with
    /// hard_negative_document_2.
    pub fn check(&self) -> Result<(), String> {
        let blank = |s: &str| s.trim().is_empty();
        if blank(&self.query_positive) || blank(&self.instruction_positive) || blank(&self.document_positive) {
            return Err("query_positive, instruction_positive and document_positive must not be empty".into());
        }
        if self.instruction_negative.is_some() != self.hard_negative_document_1.is_some() {
            return Err("instruction_negative and hard_negative_document_1 come together".into());
        }
        if self.query_negative.is_some() != self.hard_negative_document_2.is_some() {
            return Err("query_negative and hard_negative_document_2 come together".into());
        }
        Ok(())
    }

    /// The export line: compact JSON, keys in the released order.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("strings serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug)]
    struct Q {
        #[serde(rename = "_id")]
        id: String,
    }

    #[test]
    fn jsonl_reports_line_numbers() {
        let ok: Vec<Q> = parse_jsonl("{\"_id\":\"a\"}\n\n{\"_id\":\"b\"}\n").unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[1].id, "b");
        let err = parse_jsonl::<Q>("{\"_id\":\"a\"}\n{\"_id\":\n").unwrap_err();
        assert_eq!(err.line, 2);
    }

    #[test]
    fn qrels_layouts() {
        let q = parse_qrels("query-id\tcorpus-id\tscore\n1\td1\t2\n").unwrap();
        assert_eq!(q, vec![("1".into(), "d1".into(), 2)]);
        let trec = parse_qrels("5\t0\td9\t1\n").unwrap();
        assert_eq!(trec, vec![("5".into(), "d9".into(), 1)]);
        assert_eq!(parse_qrels("1\td1\n").unwrap_err().line, 1);
        assert_eq!(parse_qrels("1\td1\t1\n2\td2\tx\n").unwrap_err().line, 2);
    }

    #[test]
    fn inf_ir_row_round_trip_and_checks() {
        let line = r#"{"query_positive":"q","instruction_positive":"i","document_positive":"p","query_negative":"q2","instruction_negative":"i2","hard_negative_document_1":"n1","hard_negative_document_2":"n2"}"#;
        let row: InfIrRow = serde_json::from_str(line).unwrap();
        assert_eq!(row.to_line(), line);
        assert!(row.check().is_ok());
        let mut bad = row.clone();
        bad.hard_negative_document_1 = None;
        assert!(bad.check().is_err());
        bad = row;
        bad.query_positive = " ".into();
        assert!(bad.check().is_err());
    }
}
