//! Pinning a replica's request path (client, consensus and log-writer threads) to chosen CPUs.
//!
//! A write hands off between those three threads several times, and a hand-off to a thread
//! whose CPU sits idle costs that CPU's wake-up: on this project's 2-vCPU VM a round trip
//! between two threads took 72-74 µs across CPUs and 2.7 µs on one (an eventfd ping-pong at
//! the p50), and with three replicas each pinned to one CPU, 64 writing clients got 7.5 ± 2.3 %
//! more writes per second (README, stop 42). The kernel cannot know that, so the operator says
//! it, as with Redis's `server-cpulist`. Snapshot encoding keeps the whole machine: it is bulk
//! work that would otherwise take turns with the clients on their CPU.

use std::fmt;
use std::str::FromStr;

/// Largest CPU number a list may name, plus one (the kernel's `CPU_SETSIZE`).
pub const MAX_CPUS: usize = 1024;

/// A set of CPUs, written as a list of numbers and ranges: `0`, `0-3`, `0,2,4-5` (the form
/// `taskset -c` and `/proc` use, without strides).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuList(Vec<usize>);

impl CpuList {
    /// The CPUs, ascending, each once.
    pub fn cpus(&self) -> &[usize] {
        &self.0
    }
}

impl FromStr for CpuList {
    type Err = String;

    fn from_str(text: &str) -> Result<CpuList, String> {
        let mut cpus = Vec::new();
        for item in text.split(',') {
            let item = item.trim();
            let (first, last) = match item.split_once('-') {
                Some((a, b)) => (cpu_number(a)?, cpu_number(b)?),
                None => (cpu_number(item)?, cpu_number(item)?),
            };
            if first > last {
                return Err(format!("CPU range {item} runs backwards"));
            }
            cpus.extend(first..=last);
        }
        cpus.sort_unstable();
        cpus.dedup();
        Ok(CpuList(cpus))
    }
}

/// One CPU number of a list, below [`MAX_CPUS`].
fn cpu_number(text: &str) -> Result<usize, String> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{text:?} is not a CPU number"));
    }
    // All digits: a number too long for usize is beyond the largest CPU too.
    let n = text.parse::<usize>().unwrap_or(usize::MAX);
    if n >= MAX_CPUS {
        return Err(format!("CPU {text} is beyond the largest this system can name ({})", MAX_CPUS - 1));
    }
    Ok(n)
}

impl fmt::Display for CpuList {
    /// Consecutive CPUs as ranges: `0-3,8`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut items = Vec::new();
        let mut rest = self.0.iter().copied().peekable();
        while let Some(first) = rest.next() {
            let mut last = first;
            while rest.peek() == Some(&(last + 1)) {
                last += 1;
                rest.next();
            }
            items.push(if first == last { first.to_string() } else { format!("{first}-{last}") });
        }
        f.write_str(&items.join(","))
    }
}

/// The CPUs this thread may run on now (inherited by the threads it starts).
#[cfg(target_os = "linux")]
pub fn allowed_cpus() -> std::io::Result<CpuList> {
    // SAFETY: `set` is a plain bit set the kernel fills; its size is passed along.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(CpuList((0..MAX_CPUS).filter(|&cpu| libc::CPU_ISSET(cpu, &set)).collect()))
    }
}

/// Restricts the calling thread to `cpus` (threads it starts afterwards inherit it).
#[cfg(target_os = "linux")]
pub fn pin_current_thread(cpus: &CpuList) -> std::io::Result<()> {
    // SAFETY: as in `allowed_cpus`; every CPU number is below the set's size (`CpuList` checks).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus.cpus() {
            libc::CPU_SET(cpu, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The CPUs this thread may run on (elsewhere than Linux: unknown).
#[cfg(not(target_os = "linux"))]
pub fn allowed_cpus() -> std::io::Result<CpuList> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "CPU affinity is Linux-only here"))
}

/// Restricts the calling thread to `cpus` (elsewhere than Linux: an error).
#[cfg(not(target_os = "linux"))]
pub fn pin_current_thread(_cpus: &CpuList) -> std::io::Result<()> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "CPU affinity is Linux-only here"))
}

/// Checks that every CPU of `wanted` is one this process may use, so that pinning cannot fail
/// halfway through a replica's start.
pub fn check_available(wanted: &CpuList) -> Result<(), String> {
    let allowed = allowed_cpus().map_err(|e| format!("cannot read this process's CPUs: {e}"))?;
    match wanted.cpus().iter().find(|cpu| allowed.cpus().binary_search(cpu).is_err()) {
        Some(cpu) => Err(format!("CPU {cpu} is not available to this process (it may use {allowed})")),
        None if wanted.cpus().is_empty() => Err("the CPU list is empty".to_string()),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(text: &str) -> Result<Vec<usize>, String> {
        text.parse::<CpuList>().map(|l| l.cpus().to_vec())
    }

    #[test]
    fn lists_parse_as_taskset_writes_them() {
        let cases: [(&str, &[usize]); 6] = [
            ("0", &[0]),
            ("3-5", &[3, 4, 5]),
            ("0,2,4-5", &[0, 2, 4, 5]),
            ("5,1-2,2", &[1, 2, 5]),
            (" 7 , 1 ", &[1, 7]),
            ("1023", &[1023]),
        ];
        for (text, cpus) in cases {
            assert_eq!(list(text).as_deref(), Ok(cpus), "{text:?}");
        }
    }

    #[test]
    fn bad_lists_are_refused_with_what_is_wrong() {
        for (text, says) in [
            ("", "not a CPU number"),
            ("a", "not a CPU number"),
            ("1,", "not a CPU number"),
            ("-1", "not a CPU number"),
            ("+3", "not a CPU number"),
            ("0-10:2", "not a CPU number"),
            ("99999999999999999999999", "beyond the largest"),
            ("3-1", "runs backwards"),
            ("1024", "beyond the largest"),
            ("0-99999", "beyond the largest"),
        ] {
            let err = list(text).expect_err(text);
            assert!(err.contains(says), "{text:?}: {err}");
        }
    }

    #[test]
    fn a_list_prints_as_ranges_and_reads_back_the_same() {
        for (text, printed) in [("0", "0"), ("0-3,8", "0-3,8"), ("8,0,1,2,3,10,11", "0-3,8,10-11")] {
            let parsed: CpuList = text.parse().expect(text);
            assert_eq!(parsed.to_string(), printed);
            assert_eq!(printed.parse::<CpuList>().as_ref(), Ok(&parsed));
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_pinned_thread_runs_only_on_its_cpu_and_an_unavailable_one_is_named() {
        let allowed = allowed_cpus().expect("this thread's CPUs");
        let last = *allowed.cpus().last().expect("at least one CPU");
        let one: CpuList = last.to_string().parse().expect("a CPU number");
        assert_eq!(check_available(&one), Ok(()));
        // On a thread of its own, so the test harness's threads keep every CPU.
        let seen = std::thread::spawn(move || {
            pin_current_thread(&one).expect("pinned");
            allowed_cpus().expect("this thread's CPUs")
        })
        .join()
        .expect("the pinned thread");
        assert_eq!(seen.cpus(), &[last]);
        let missing = (0..MAX_CPUS).find(|cpu| allowed.cpus().binary_search(cpu).is_err());
        if let Some(cpu) = missing {
            let err = check_available(&cpu.to_string().parse().expect("a CPU number")).expect_err("refused");
            assert!(err.contains(&format!("CPU {cpu} is not available")), "{err}");
        }
    }
}
