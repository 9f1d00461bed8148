//! Listwise re-ranking (RankGPT): the model sees a window of numbered
//! passages and answers their order, `[2] > [3] > [1]`; windows slide from
//! the end of the list to its front, so that good passages found late move
//! up window by window. A reply that leaves some out, repeats or invents
//! numbers is repaired: unknown and repeated numbers are dropped, and the
//! passages it did not name keep their order after those it did.

/// The windows over `n` candidates, in the order they are asked: the last
/// `size` first, then each `step` nearer the front, the last one at 0.
pub fn windows(n: usize, size: usize, step: usize) -> Vec<(usize, usize)> {
    let (size, step) = (size.max(2), step.max(1));
    if n <= size {
        return if n > 1 { vec![(0, n)] } else { Vec::new() };
    }
    let mut out = Vec::new();
    let mut end = n;
    loop {
        let start = end.saturating_sub(size);
        out.push((start, end));
        if start == 0 {
            return out;
        }
        end = end.saturating_sub(step).max(size.min(n));
    }
}

/// The order a reply gives for a window of `len` passages, as 0-based
/// positions in the window, every position exactly once.
pub fn parse_permutation(reply: &str, len: usize) -> Vec<usize> {
    let mut seen = vec![false; len];
    let mut order = Vec::with_capacity(len);
    let mut digits = String::new();
    for c in reply.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        if !digits.is_empty() {
            if let Ok(n) = digits.parse::<usize>() {
                if (1..=len).contains(&n) && !seen[n - 1] {
                    seen[n - 1] = true;
                    order.push(n - 1);
                }
            }
            digits.clear();
        }
    }
    order.extend((0..len).filter(|i| !seen[*i]));
    order
}

/// The order a JSON reply's ranking (1-based numbers, best first) gives,
/// repaired as `parse_permutation` repairs text.
pub fn permutation_from_ranking(ranking: &[i64], len: usize) -> Vec<usize> {
    let text: Vec<String> = ranking.iter().map(|n| n.to_string()).collect();
    // Negative numbers would lose their sign in the parse: drop them first.
    let kept: Vec<&String> = text.iter().filter(|t| !t.starts_with('-')).collect();
    parse_permutation(&kept.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(" "), len)
}

/// The passages of one window as the prompt shows them: `[1] text`, one
/// per paragraph, each cut to `max_chars` characters (RankGPT cuts each to
/// a few hundred tokens, so that a window fits any context).
pub fn numbered_passages(texts: &[&str], max_chars: usize) -> String {
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let one_line = t.split_whitespace().collect::<Vec<_>>().join(" ");
            format!("[{}] {}", i + 1, crate::engine::llm::stages::clip(&one_line, max_chars))
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// Reorder `items[start..end]` by `permutation` (positions in the window).
pub fn apply<T: Clone>(items: &mut [T], start: usize, end: usize, permutation: &[usize]) {
    let window: Vec<T> = items[start..end].to_vec();
    for (slot, &from) in permutation.iter().enumerate() {
        items[start + slot] = window[from].clone();
    }
}

/// A relevance in (0, 1] from a final position, so that listwise results
/// go through the same ordering as pointwise ones (position 0 is 1).
pub fn relevance_of_position(position: usize, n: usize) -> f64 {
    1.0 - position as f64 / n.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_slide_from_the_end_to_the_front() {
        assert_eq!(windows(20, 10, 5), vec![(10, 20), (5, 15), (0, 10)]);
        assert_eq!(windows(12, 10, 5), vec![(2, 12), (0, 10)]);
        assert_eq!(windows(7, 10, 5), vec![(0, 7)]);
        assert_eq!(windows(1, 10, 5), Vec::<(usize, usize)>::new());
        assert_eq!(windows(100, 20, 10).len(), 9);
        assert_eq!(windows(100, 20, 10).last(), Some(&(0, 20)));
    }

    #[test]
    fn replies_are_repaired_into_permutations() {
        assert_eq!(parse_permutation("[2] > [3] > [1]", 3), vec![1, 2, 0]);
        assert_eq!(parse_permutation("3, 3, 9, 1", 4), vec![2, 0, 1, 3]);
        assert_eq!(parse_permutation("no idea", 3), vec![0, 1, 2]);
        assert_eq!(parse_permutation("[10] > [1]", 10), vec![9, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn json_rankings_are_repaired_too() {
        assert_eq!(permutation_from_ranking(&[2, 3, 1], 3), vec![1, 2, 0]);
        assert_eq!(permutation_from_ranking(&[-1, 3, 3, 7], 3), vec![2, 0, 1]);
        assert_eq!(permutation_from_ranking(&[], 2), vec![0, 1]);
    }

    #[test]
    fn passages_are_numbered_on_one_line_each_and_cut() {
        let shown = numbered_passages(&["a  b\nc", "dddd eeee ffff"], 9);
        assert_eq!(shown.lines().next(), Some("[1] a b c"));
        assert!(shown.contains("\n\n[2] dddd"));
        assert!(!shown.contains("ffff"));
    }

    #[test]
    fn a_window_is_reordered_in_place() {
        let mut items = vec!['a', 'b', 'c', 'd', 'e'];
        apply(&mut items, 1, 4, &[2, 0, 1]);
        assert_eq!(items, vec!['a', 'd', 'b', 'c', 'e']);
        assert_eq!(relevance_of_position(0, 4), 1.0);
        assert_eq!(relevance_of_position(3, 4), 0.25);
    }
}
