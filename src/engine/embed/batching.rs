//! Cutting a set of tokenized texts into batches by a token budget.
//!
//! A batch is padded to its longest member, so its cost is
//! `rows * longest`. Sorting by length first keeps padding small (the
//! reference pipeline does the same); the budget caps the memory and the
//! time of one ONNX Runtime call.

/// Indices into `lengths`, grouped into batches whose padded size
/// (`rows * longest`) stays within `token_budget`. A text longer than the
/// budget gets a batch of its own. Order inside the plan is longest first.
pub fn plan_batches(lengths: &[usize], token_budget: usize, max_rows: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]).then(a.cmp(&b)));
    let mut batches = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut longest = 0;
    for i in order {
        let len = lengths[i].max(1);
        let widest = longest.max(len);
        if !current.is_empty() && ((current.len() + 1) * widest > token_budget || current.len() >= max_rows) {
            batches.push(std::mem::take(&mut current));
            longest = 0;
        }
        longest = longest.max(len);
        current.push(i);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_index_once_and_budget_kept() {
        let lengths = [5, 300, 12, 12, 256, 1, 40, 40, 40, 7];
        let plan = plan_batches(&lengths, 512, 64);
        let mut seen: Vec<usize> = plan.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
        for batch in &plan {
            let longest = batch.iter().map(|&i| lengths[i]).max().unwrap();
            assert!(batch.len() == 1 || batch.len() * longest <= 512, "{batch:?}");
        }
    }

    #[test]
    fn sorted_longest_first_and_row_cap() {
        let lengths = vec![10; 100];
        let plan = plan_batches(&lengths, 1_000_000, 32);
        assert_eq!(plan.iter().map(Vec::len).collect::<Vec<_>>(), vec![32, 32, 32, 4]);
        let plan = plan_batches(&[3, 9, 5], 100, 8);
        assert_eq!(plan, vec![vec![1, 2, 0]]);
    }

    #[test]
    fn oversized_text_gets_own_batch_and_empty_input_no_batch() {
        assert_eq!(plan_batches(&[1000, 10], 100, 8), vec![vec![0], vec![1]]);
        assert!(plan_batches(&[], 100, 8).is_empty());
    }
}
