//! Listwise re-ranking through an endpoint (RankGPT): windows of numbered
//! candidates, from the end of the list to its front, each reply a JSON
//! ranking that reorders its window before the next window is asked.
//! Windows depend on each other, so they go one at a time; a passage's
//! place depends on its neighbours, so listwise results are not cached.

use super::judge::shown;
use super::mode::Mode;
use super::usage::Usage;
use crate::engine::llm::chat::parse_reply;
use crate::engine::llm::runner::{self, Outcome};
use crate::engine::rerank::listwise;
use crate::pg::corpus::search::ScoredCandidate;
use crate::pg::interrupt::PgInterrupt;
use crate::pg::llm::endpoints::EndpointRow;
use crate::pg::llm::prompts::Prompt;
use std::collections::HashMap;

/// Candidates per window and how far each window moves (RankGPT's 20 and
/// 10 halved: small local models lose track of long lists).
const WINDOW: usize = 10;
const STEP: usize = 5;
/// Characters of each passage a window shows.
const PASSAGE_CHARS: usize = 1200;

/// Each candidate's relevance (in `scored`'s order) from its final place,
/// or why a window could not be ranked.
pub fn judge(
    row: &EndpointRow,
    instruction: &str,
    query: &str,
    scored: &[ScoredCandidate],
    usage: &mut Usage,
) -> Result<Vec<f64>, String> {
    let prompt = Prompt::load(Mode::Listwise.stage(), None);
    // Positions into `scored`, in the current order.
    let mut order: Vec<usize> = (0..scored.len()).collect();
    for (start, end) in listwise::windows(scored.len(), WINDOW, STEP) {
        let texts: Vec<&str> = order[start..end].iter().map(|&i| scored[i].text.as_str()).collect();
        let passages = listwise::numbered_passages(&texts, PASSAGE_CHARS);
        let count = texts.len().to_string();
        let slots = HashMap::from([
            ("instruction", shown(instruction)),
            ("query", query),
            ("passages", passages.as_str()),
            ("count", count.as_str()),
        ]);
        let user = prompt.render(Mode::Listwise.stage(), &slots);
        let job = prompt.job(row, Mode::Listwise.stage(), 0, &user);
        let schema = prompt.reply_schema.clone();
        let check: Box<runner::Check> = Box::new(move |_, text| parse_reply(text, &schema));
        let mut ranking: Option<Vec<i64>> = None;
        let mut failure: Option<String> = None;
        runner::run(
            row.transport(),
            vec![job],
            row.settings(),
            check,
            &PgInterrupt,
            |_, outcome| {
                usage.count(&outcome);
                match outcome {
                    Outcome::Done { reply, .. } => {
                        ranking = Some(
                            reply.value["ranking"]
                                .as_array()
                                .map(|a| a.iter().filter_map(|v| v.as_i64()).collect())
                                .unwrap_or_default(),
                        );
                    }
                    Outcome::Failed { reason, attempts, .. } => {
                        failure = Some(format!("{reason} (after {attempts} attempt(s))"));
                    }
                }
                Ok(())
            },
        )
        .unwrap_or_else(|e| crate::pg::errors::raise(e));
        let Some(ranking) = ranking else {
            return Err(format!(
                "the window of candidates {}-{} could not be ranked: {}",
                start + 1,
                end,
                failure.unwrap_or_default()
            ));
        };
        let permutation = listwise::permutation_from_ranking(&ranking, end - start);
        listwise::apply(&mut order, start, end, &permutation);
    }
    usage.judged = scored.len() as u64;
    let mut relevance = vec![0.0; scored.len()];
    for (place, &i) in order.iter().enumerate() {
        relevance[i] = listwise::relevance_of_position(place, scored.len());
    }
    Ok(relevance)
}
