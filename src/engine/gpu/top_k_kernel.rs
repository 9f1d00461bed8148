//! The device's top-k kernels (`kernels/top_k.cu`, compiled at run time by
//! NVRTC) and how they are launched: which compiled variant serves a k, how
//! many positions each block takes. Pure: the test runs the same kernel
//! source on the CPU (threads as pthreads) against a brute-force top k.

/// The kernel source, compiled once per variant with `-DKMAX=` and `-DTHREADS_MAX=`.
pub const SOURCE: &str = include_str!("kernels/top_k.cu");

/// Threads per block (a power of two; the kernel's THREADS_MAX).
pub const THREADS: u32 = 256;

/// The compiled variants' largest k: a thread's best list lives in local
/// memory sized KMAX, so small k gets a small variant.
pub const VARIANTS: [usize; 3] = [16, 64, 256];

/// The largest k one device pass can return.
pub const MAX_K: usize = VARIANTS[VARIANTS.len() - 1];

/// The variant (its KMAX) that serves `k`, None above `MAX_K`.
pub fn variant_for(k: usize) -> Option<usize> {
    VARIANTS.iter().copied().find(|&v| k <= v)
}

/// NVRTC options for one variant.
pub fn compile_defines(kmax: usize) -> Vec<String> {
    vec![format!("-DKMAX={kmax}"), format!("-DTHREADS_MAX={THREADS}")]
}

/// Positions per block in pass 1: enough per thread (at least 4k, at least
/// 256) that most are rejected against a full list, so the cost is the read.
pub fn chunk(k: usize) -> usize {
    (THREADS as usize * 4 * k).max(THREADS as usize * 256)
}

/// Pass 1's blocks per query over `n` positions.
pub fn blocks(n: usize, k: usize) -> usize {
    n.div_ceil(chunk(k)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::process::Command;

    #[test]
    fn variants_cover_every_k_up_to_the_largest() {
        assert_eq!(variant_for(1), Some(16));
        assert_eq!(variant_for(16), Some(16));
        assert_eq!(variant_for(17), Some(64));
        assert_eq!(variant_for(256), Some(256));
        assert_eq!(variant_for(257), None);
        assert_eq!(blocks(10_000_000, 64), 153);
        assert_eq!(blocks(5, 64), 1);
    }

    /// Best k by (score desc, position asc), masked positions skipped.
    fn brute_force(scores: &[f32], masked: &[u8], k: usize) -> Vec<(f32, i32)> {
        let mut all: Vec<(f32, i32)> = scores
            .iter()
            .enumerate()
            .filter(|(i, _)| masked[*i] == 0)
            .map(|(i, s)| (*s, i as i32))
            .collect();
        all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        all.truncate(k);
        all
    }

    /// Compile `kernels/cpu_harness.cpp` (which includes the kernel) with the
    /// system C++ compiler; None when there is none.
    fn build_harness(kmax: usize, threads: usize) -> Option<PathBuf> {
        let dir = std::env::temp_dir().join(format!("inf_ir_topk_{}_{kmax}_{threads}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let binary = dir.join("harness");
        let kernels = concat!(env!("CARGO_MANIFEST_DIR"), "/src/engine/gpu/kernels");
        let built = Command::new("c++")
            .args([
                "-O1",
                "-std=c++17",
                &format!("-DKMAX={kmax}"),
                &format!("-DTHREADS_MAX={threads}"),
            ])
            .arg(format!("-I{kernels}"))
            .arg(format!("{kernels}/cpu_harness.cpp"))
            .arg("-o")
            .arg(&binary)
            .arg("-lpthread")
            .status()
            .ok()?;
        assert!(built.success(), "the kernel did not compile for the CPU");
        Some(binary)
    }

    #[allow(clippy::too_many_arguments)]
    fn run_harness(
        binary: &PathBuf,
        scores: &[f32],
        nq: usize,
        n: usize,
        masked: &[u8],
        k: usize,
        threads: usize,
        chunk: usize,
    ) -> Vec<Vec<(f32, i32)>> {
        let dir = binary.parent().unwrap();
        let (input, output) = (dir.join("in.bin"), dir.join("out.bin"));
        let mut bytes = Vec::new();
        for v in [nq, n, k, threads, chunk] {
            bytes.extend((v as i32).to_le_bytes());
        }
        scores.iter().for_each(|s| bytes.extend(s.to_le_bytes()));
        bytes.extend(masked);
        std::fs::write(&input, bytes).unwrap();
        assert!(Command::new(binary)
            .arg(&input)
            .arg(&output)
            .status()
            .unwrap()
            .success());
        let out = std::fs::read(&output).unwrap();
        let pairs: Vec<(f32, i32)> = out
            .chunks_exact(8)
            .map(|c| {
                (
                    f32::from_le_bytes(c[0..4].try_into().unwrap()),
                    i32::from_le_bytes(c[4..8].try_into().unwrap()),
                )
            })
            .collect();
        pairs
            .chunks(k)
            .map(|c| c.iter().copied().filter(|p| p.1 >= 0).collect())
            .collect()
    }

    #[test]
    fn the_kernel_equals_brute_force_on_the_cpu() {
        // Small blocks and chunks so that many blocks, partial lists, ties
        // across blocks and masked runs all occur.
        let (kmax, threads) = (16, 8);
        let Some(binary) = build_harness(kmax, threads) else {
            eprintln!("skipped: no C++ compiler (c++) to run the kernel on the CPU");
            return;
        };
        let (nq, n) = (3, 2000);
        let mut state = 99u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u32
        };
        // Scores from few values: many exact ties, decided by the smaller position.
        let scores: Vec<f32> = (0..nq * n).map(|_| (next() % 200) as f32 / 100.0 - 1.0).collect();
        let mut masked: Vec<u8> = (0..n).map(|_| (next() % 7 == 0) as u8).collect();
        masked[100..400].iter_mut().for_each(|m| *m = 1);
        for (k, chunk) in [(10, 97), (16, 64), (1, 2000), (16, 9)] {
            let got = run_harness(&binary, &scores, nq, n, &masked, k, threads, chunk);
            for q in 0..nq {
                let want = brute_force(&scores[q * n..(q + 1) * n], &masked, k);
                assert_eq!(got[q], want, "query {q}, k {k}, chunk {chunk}");
            }
        }
        // Fewer unmasked positions than k: the rest are empty (id -1).
        let all_but_three: Vec<u8> = (0..n).map(|i| (i % 700 != 0) as u8).collect();
        let got = run_harness(&binary, &scores, nq, n, &all_but_three, 16, threads, 64);
        assert_eq!(got[1], brute_force(&scores[n..2 * n], &all_but_three, 16));
        assert_eq!(got[1].len(), 3);
        std::fs::remove_dir_all(binary.parent().unwrap()).ok();
    }
}
