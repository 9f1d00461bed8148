//! Whether the rest of the machine wants the cores a background piece would
//! take. Background embedding is meant to use CPU nobody else wants (as
//! autovacuum's cost delay keeps vacuum from crowding out the application):
//! on a 2-core server a piece running on both cores cut the application's
//! single-row INSERTs to 15-25% of their idle rate, and running the host's
//! threads at SCHED_IDLE won back only part of that. So the
//! batcher looks, before each background piece, at how much CPU everything
//! but this process used while the last piece ran (`/proc/stat`'s busy time
//! less this process's own), and waits while that is more than the cores its
//! threads leave free.

use std::time::Instant;

/// Others may use this much of a core more than the cores left free
/// without counting as wanting ours: the server's own housekeeping (the
/// checkpointer, a probe of a view) is not an application.
const MARGIN_CORES: f64 = 0.25;

/// CPU time counted by the kernel at one moment: the whole machine's busy
/// ticks and this process's own (all its threads).
#[derive(Debug, Clone, Copy)]
pub struct CpuTimes {
    machine_busy_ticks: u64,
    own_ticks: u64,
    at: Instant,
}

impl CpuTimes {
    /// How long ago this reading was taken.
    pub fn age(&self) -> std::time::Duration {
        self.at.elapsed()
    }
}

/// The busy ticks of /proc/stat's "cpu" line (user, nice, system, irq,
/// softirq, steal; not idle or iowait) and the number of CPUs listed.
pub fn parse_machine(proc_stat: &str) -> Option<(u64, usize)> {
    let total = proc_stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = total
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]:
    // guest time is already inside user and nice.
    if fields.len() < 4 {
        return None;
    }
    let busy = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| fields.get(i)).sum();
    let cpus = proc_stat
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    Some((busy, cpus.max(1)))
}

/// utime + stime of /proc/self/stat (all threads of the process). The
/// command name in parentheses may hold spaces, so fields count from the
/// last ')'.
pub fn parse_own(proc_self_stat: &str) -> Option<u64> {
    let after_name = &proc_self_stat[proc_self_stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Field 3 (state) is the first after the name; utime and stime are 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Cores everything but this process used on average between two readings.
pub fn others_cores(before: &CpuTimes, after: &CpuTimes, ticks_per_second: f64) -> f64 {
    let seconds = after.at.duration_since(before.at).as_secs_f64();
    if seconds <= 0.0 || ticks_per_second <= 0.0 {
        return 0.0;
    }
    let machine = after.machine_busy_ticks.saturating_sub(before.machine_busy_ticks);
    let own = after.own_ticks.saturating_sub(before.own_ticks);
    machine.saturating_sub(own) as f64 / ticks_per_second / seconds
}

/// Whether others using `others` cores want some of the `threads` a piece
/// runs on, on a machine of `cpus`.
pub fn others_want_our_cores(others: f64, cpus: usize, threads: usize) -> bool {
    others > cpus.saturating_sub(threads) as f64 + MARGIN_CORES
}

/// Reads the kernel's counters; `None` where there is no /proc (then the
/// batcher never waits).
pub struct CpuMeter {
    cpus: usize,
    ticks_per_second: f64,
}

impl CpuMeter {
    pub fn new() -> Option<CpuMeter> {
        let (_, cpus) = parse_machine(&std::fs::read_to_string("/proc/stat").ok()?)?;
        // SAFETY: sysconf only reads a constant of the system.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        (ticks > 0).then_some(CpuMeter {
            cpus,
            ticks_per_second: ticks as f64,
        })
    }

    pub fn read(&self) -> Option<CpuTimes> {
        let (machine_busy_ticks, _) = parse_machine(&std::fs::read_to_string("/proc/stat").ok()?)?;
        let own_ticks = parse_own(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
        Some(CpuTimes {
            machine_busy_ticks,
            own_ticks,
            at: Instant::now(),
        })
    }

    /// Whether, between the two readings, others wanted the cores `threads` take.
    pub fn contended(&self, before: &CpuTimes, after: &CpuTimes, threads: usize) -> bool {
        others_want_our_cores(others_cores(before, after, self.ticks_per_second), self.cpus, threads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const STAT: &str = "cpu  100 5 50 1000 20 3 2 10 7 0\n\
                        cpu0 50 2 25 500 10 1 1 5 3 0\n\
                        cpu1 50 3 25 500 10 2 1 5 4 0\n\
                        intr 12345\nctxt 999\n";

    #[test]
    fn machine_busy_leaves_out_idle_iowait_and_guest() {
        assert_eq!(parse_machine(STAT), Some((100 + 5 + 50 + 3 + 2 + 10, 2)));
        assert_eq!(parse_machine("intr 1\n"), None);
        assert_eq!(parse_machine("cpu  1 x 3 4\n"), None);
    }

    #[test]
    fn own_ticks_count_from_the_last_parenthesis() {
        let line = "4242 (inf_ir (worker) x) S 1 2 3 4 5 6 7 8 9 10 31 9 0 0 20 0 7 0";
        assert_eq!(parse_own(line), Some(31 + 9));
        assert_eq!(parse_own("4242 (short"), None);
    }

    fn at(start: Instant, ms: u64, machine: u64, own: u64) -> CpuTimes {
        CpuTimes {
            machine_busy_ticks: machine,
            own_ticks: own,
            at: start + Duration::from_millis(ms),
        }
    }

    #[test]
    fn others_are_the_machine_less_this_process() {
        let t = Instant::now();
        // 2 s, 400 ticks busy of which 300 ours: others used 0.5 of a core.
        let others = others_cores(&at(t, 0, 1000, 50), &at(t, 2000, 1400, 350), 100.0);
        assert!((others - 0.5).abs() < 1e-9, "{others}");
        // Counters that went backwards (a container's view) count as nothing.
        assert_eq!(others_cores(&at(t, 0, 1000, 50), &at(t, 1000, 900, 60), 100.0), 0.0);
        assert_eq!(others_cores(&at(t, 0, 1000, 50), &at(t, 0, 1400, 60), 100.0), 0.0);
    }

    #[test]
    fn others_want_our_cores_only_beyond_the_free_ones() {
        // 2 cores, 2 threads: any real demand is contention.
        assert!(!others_want_our_cores(0.05, 2, 2));
        assert!(others_want_our_cores(0.6, 2, 2));
        // 16 cores, 4 threads: others may use 12 without meeting us.
        assert!(!others_want_our_cores(11.0, 16, 4));
        assert!(others_want_our_cores(12.5, 16, 4));
        // More threads than cores: as many as the machine has.
        assert!(others_want_our_cores(0.3, 2, 8));
    }

    #[test]
    fn the_meter_reads_this_machine() {
        let Some(meter) = CpuMeter::new() else {
            return; // no /proc: nothing to read (the batcher never waits)
        };
        let before = meter.read().expect("a reading");
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        let after = meter.read().expect("a reading");
        assert!(after.own_ticks >= before.own_ticks && after.machine_busy_ticks >= before.machine_busy_ticks);
    }
}
