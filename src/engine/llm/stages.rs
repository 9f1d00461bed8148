//! The three InF-IR synthesis stages without PostgreSQL: what each takes
//! from a schema-checked reply, the checks a JSON Schema cannot express (no
//! blank field, a negative really changes what it alters, an instruction is
//! not the query again), cutting long slot values, and the progress line a
//! stage run reports.
//!
//! A reply that fails these checks is treated like one that breaks its
//! schema: retried, then recorded as a failure, never stored in part.

use serde_json::Value;
use std::borrow::Cow;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// (query, passage) → instruction+ (the positive).
    Instruction,
    /// positive → instruction− with its passage, query− with its passage.
    Negatives,
    /// complete group → five scores and an ambiguity flag.
    Judge,
}

impl Stage {
    pub const ALL: [Stage; 3] = [Stage::Instruction, Stage::Negatives, Stage::Judge];

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Stage::Instruction => "instruction",
            Stage::Negatives => "negatives",
            Stage::Judge => "judge",
        }
    }
}

/// The positive a reply is checked against (the instruction is empty in the
/// instruction stage, which writes it).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Positive {
    pub query: String,
    pub instruction: String,
    pub passage: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Negatives {
    pub instruction_negative: String,
    pub instruction_negative_passage: String,
    pub query_negative: String,
    pub query_negative_passage: String,
}

/// The judge's scores in `validation_scores`' terms (see sql/dataset.sql):
/// the prompt's cases a..e are (q+ i+ p+), (q+ i− p+), (q+ i− p_i−),
/// (q− i+ p+), (q− i+ p_q−).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    pub pos_pos: f32,
    pub ineg_pos: f32,
    pub ineg_own: f32,
    pub qneg_pos: f32,
    pub qneg_own: f32,
    pub ambiguous: bool,
}

/// Check a reply of `stage` beyond its schema; the reason when it is unusable.
pub fn check(stage: Stage, reply: &Value, positive: &Positive) -> Result<(), String> {
    match stage {
        Stage::Instruction => instruction_of(reply, positive).map(drop),
        Stage::Negatives => negatives_of(reply, positive).map(drop),
        Stage::Judge => verdict_of(reply).map(drop),
    }
}

/// The instruction of an instruction-stage reply, trimmed.
pub fn instruction_of(reply: &Value, positive: &Positive) -> Result<String, String> {
    let instruction = text_field(reply, "instruction")?;
    if same(&instruction, &positive.query) {
        return Err("the instruction only repeats the query".into());
    }
    Ok(instruction)
}

/// The negatives of a negatives-stage reply, trimmed; each must alter the
/// positive, and a negative's passage must not be the positive passage.
pub fn negatives_of(reply: &Value, positive: &Positive) -> Result<Negatives, String> {
    let n = Negatives {
        instruction_negative: text_field(reply, "instruction_negative")?,
        instruction_negative_passage: text_field(reply, "instruction_negative_passage")?,
        query_negative: text_field(reply, "query_negative")?,
        query_negative_passage: text_field(reply, "query_negative_passage")?,
    };
    if same(&n.instruction_negative, &positive.instruction) {
        return Err("instruction_negative does not change the instruction".into());
    }
    if same(&n.query_negative, &positive.query) {
        return Err("query_negative does not change the query".into());
    }
    for (name, passage) in [
        ("instruction_negative_passage", &n.instruction_negative_passage),
        ("query_negative_passage", &n.query_negative_passage),
    ] {
        if same(passage, &positive.passage) {
            return Err(format!("{name} is the positive passage again"));
        }
    }
    Ok(n)
}

/// The verdict of a judge reply (`a`..`e` in [0, 1], `ambiguous`).
pub fn verdict_of(reply: &Value) -> Result<Verdict, String> {
    let score = |key: &str| -> Result<f32, String> {
        match reply.get(key).and_then(Value::as_f64) {
            Some(s) if (0.0..=1.0).contains(&s) => Ok(s as f32),
            Some(s) => Err(format!("score \"{key}\" is {s}, outside [0, 1]")),
            None => Err(format!("score \"{key}\" is missing or not a number")),
        }
    };
    Ok(Verdict {
        pos_pos: score("a")?,
        ineg_pos: score("b")?,
        ineg_own: score("c")?,
        qneg_pos: score("d")?,
        qneg_own: score("e")?,
        ambiguous: reply
            .get("ambiguous")
            .and_then(Value::as_bool)
            .ok_or("\"ambiguous\" is missing or not true/false")?,
    })
}

fn text_field(reply: &Value, key: &str) -> Result<String, String> {
    match reply.get(key).and_then(Value::as_str).map(str::trim) {
        Some("") => Err(format!("\"{key}\" is blank")),
        // Dots, slashes and escapes are what a model writes when it has nothing to say.
        Some(text) if text.chars().filter(|c| c.is_alphanumeric()).count() < 3 => {
            Err(format!("\"{key}\" has no words: {text:?}"))
        }
        Some(text) => Ok(text.to_string()),
        None => Err(format!("\"{key}\" is missing or not a string")),
    }
}

/// Equal up to case, runs of white space and closing punctuation: a
/// "negative" that differs only so is no negative.
fn same(a: &str, b: &str) -> bool {
    fn norm(s: &str) -> String {
        let words: Vec<String> = s.split_whitespace().map(str::to_lowercase).collect();
        words.join(" ").trim_end_matches(['.', '?', '!', ';', ':']).to_string()
    }
    norm(a) == norm(b)
}

/// `text` cut to at most `max_chars` characters, at a word boundary when
/// one is near, with "…" where it was cut: long passages would otherwise
/// overrun the model's context (and the bill) for no better instruction.
pub fn clip(text: &str, max_chars: usize) -> Cow<'_, str> {
    let Some((cut, _)) = text.char_indices().nth(max_chars) else {
        return Cow::Borrowed(text);
    };
    let head = &text[..cut];
    // Back up to the last white space in the final tenth, if there is one.
    let floor = head.len() - head.len() / 10;
    let end = head[floor..]
        .rfind(char::is_whitespace)
        .map(|i| floor + i)
        .unwrap_or(head.len());
    Cow::Owned(format!("{}…", head[..end].trim_end()))
}

/// Counters of one stage run, for its progress line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// Items the run expects to process (pending at its start, capped by its limit).
    pub total: u64,
    pub done: u64,
    pub failed: u64,
    pub skipped: u64,
    pub tokens: u64,
    /// Dollars, when the endpoint has prices.
    pub cost: Option<f64>,
}

impl Progress {
    pub fn processed(&self) -> u64 {
        self.done + self.failed + self.skipped
    }

    /// Items per second so far and the seconds left at that rate.
    pub fn rate_and_eta(&self, elapsed_secs: f64) -> (f64, Option<f64>) {
        let processed = self.processed() as f64;
        if processed == 0.0 || elapsed_secs <= 0.0 {
            return (0.0, None);
        }
        let rate = processed / elapsed_secs;
        let left = self.total.saturating_sub(self.processed()) as f64;
        (rate, Some(left / rate))
    }

    /// "12/20 items (11 done, 1 failed, 0 skipped), 0.41/s, 24 s elapsed, ETA 20 s, 5321 tokens, $0.0012"
    pub fn line(&self, elapsed_secs: f64) -> String {
        let (rate, eta) = self.rate_and_eta(elapsed_secs);
        let mut line = format!(
            "{}/{} items ({} done, {} failed, {} skipped), {:.2}/s, {} elapsed",
            self.processed(),
            self.total,
            self.done,
            self.failed,
            self.skipped,
            rate,
            duration(elapsed_secs)
        );
        if let Some(eta) = eta.filter(|_| self.processed() < self.total) {
            line.push_str(&format!(", ETA {}", duration(eta)));
        }
        line.push_str(&format!(", {} tokens", self.tokens));
        if let Some(cost) = self.cost {
            line.push_str(&format!(", ${cost:.4}"));
        }
        line
    }
}

/// "45 s", "3 min 05 s", "2 h 01 min".
fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, (s % 3600) / 60),
    }
}

/// Dollars for `prompt_tokens` and `completion_tokens` at per-million
/// prices; None unless both prices are known.
pub fn cost(
    prompt_tokens: u64,
    completion_tokens: u64,
    input_price: Option<f64>,
    output_price: Option<f64>,
) -> Option<f64> {
    Some((prompt_tokens as f64 * input_price? + completion_tokens as f64 * output_price?) / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn positive() -> Positive {
        Positive {
            query: "how long do cats sleep".into(),
            instruction: "Only veterinary sources.".into(),
            passage: "Cats sleep for twelve to sixteen hours a day.".into(),
        }
    }

    #[test]
    fn stage_names_round_trip() {
        for s in Stage::ALL {
            assert_eq!(Stage::parse(s.name()), Some(s));
        }
        assert_eq!(Stage::parse("Judge"), None);
    }

    #[test]
    fn an_instruction_is_trimmed_and_must_not_repeat_the_query() {
        let p = positive();
        assert_eq!(
            instruction_of(&json!({"instruction": "  Only veterinary sources. "}), &p).unwrap(),
            "Only veterinary sources."
        );
        assert!(instruction_of(&json!({"instruction": "How long do  cats sleep?"}), &p)
            .unwrap_err()
            .contains("repeats the query"));
        assert!(instruction_of(&json!({"instruction": "   "}), &p)
            .unwrap_err()
            .contains("blank"));
        assert!(instruction_of(&json!({"instruction": "... \\n /"}), &p)
            .unwrap_err()
            .contains("no words"));
        assert!(instruction_of(&json!({"instruction": 3}), &p)
            .unwrap_err()
            .contains("not a string"));
    }

    #[test]
    fn negatives_must_change_what_they_alter() {
        let p = positive();
        let good = json!({
            "instruction_negative": "Only sources about dogs.",
            "instruction_negative_passage": "Dogs sleep about twelve hours a day.",
            "query_negative": "how long do cats live",
            "query_negative_passage": "Indoor cats often live fifteen years."
        });
        let n = negatives_of(&good, &p).unwrap();
        assert_eq!(n.query_negative, "how long do cats live");
        let mut same_instruction = good.clone();
        same_instruction["instruction_negative"] = json!("only veterinary sources");
        assert!(negatives_of(&same_instruction, &p)
            .unwrap_err()
            .contains("does not change the instruction"));
        let mut same_query = good.clone();
        same_query["query_negative"] = json!("How long do cats sleep?");
        assert!(negatives_of(&same_query, &p)
            .unwrap_err()
            .contains("does not change the query"));
        let mut same_passage = good.clone();
        same_passage["query_negative_passage"] = json!(p.passage.clone());
        assert!(negatives_of(&same_passage, &p)
            .unwrap_err()
            .contains("positive passage again"));
        let mut blank = good;
        blank["instruction_negative_passage"] = json!("\n");
        assert!(check(Stage::Negatives, &blank, &p).is_err());
    }

    #[test]
    fn a_verdict_maps_the_cases_to_score_columns() {
        let v = verdict_of(&json!({"a": 0.9, "b": 0.1, "c": 0.8, "d": 0.2, "e": 1, "ambiguous": false})).unwrap();
        assert_eq!(
            (v.pos_pos, v.ineg_pos, v.ineg_own, v.qneg_pos, v.qneg_own, v.ambiguous),
            (0.9, 0.1, 0.8, 0.2, 1.0, false)
        );
        assert!(verdict_of(&json!({"a": 1.5, "b": 0, "c": 0, "d": 0, "e": 0, "ambiguous": true})).is_err());
        assert!(verdict_of(&json!({"a": 1, "b": 0, "c": 0, "d": 0, "e": 0})).is_err());
    }

    #[test]
    fn clip_cuts_at_a_word_boundary() {
        assert_eq!(clip("short", 10), "short");
        let text = "one two three four five six seven eight nine ten eleven";
        let cut = clip(text, 30);
        assert!(cut.ends_with('…') && cut.chars().count() <= 31, "{cut}");
        assert_eq!(cut, "one two three four five six…");
        // No space near the cut: cut mid-word, on a character boundary.
        assert_eq!(clip("ééééééééé", 4), "éééé…");
    }

    #[test]
    fn progress_line_has_rate_eta_tokens_and_cost() {
        let p = Progress {
            total: 20,
            done: 9,
            failed: 1,
            skipped: 0,
            tokens: 5321,
            cost: cost(4000, 1321, Some(0.15), Some(0.60)),
        };
        assert_eq!(
            p.line(25.0),
            "10/20 items (9 done, 1 failed, 0 skipped), 0.40/s, 25 s elapsed, ETA 25 s, 5321 tokens, $0.0014"
        );
        let finished = Progress {
            done: 20,
            failed: 0,
            ..p
        };
        assert!(!finished.line(125.0).contains("ETA"), "{}", finished.line(125.0));
        assert!(finished.line(125.0).contains("2 min 05 s elapsed"));
        assert_eq!(Progress::default().rate_and_eta(3.0), (0.0, None));
        assert_eq!(cost(10, 10, Some(1.0), None), None);
    }
}
