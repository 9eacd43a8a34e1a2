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

/// Largest CPU number a list may name, plus one (far above glibc's `CPU_SETSIZE` of 1,024: the
/// masks here are as long as the kernel's count of possible CPUs needs, so large machines work).
pub const MAX_CPUS: usize = 1 << 16;

/// One word of a CPU mask: the kernel's is an array of `unsigned long`.
type MaskWord = libc::c_ulong;

/// Bits in one [`MaskWord`].
const WORD_BITS: usize = MaskWord::BITS as usize;

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
        return Err(format!("CPU {text} is beyond the largest CPU number accepted ({})", MAX_CPUS - 1));
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
    let words = read_mask(|words| {
        let bytes = std::mem::size_of_val(words);
        // SAFETY: the kernel, and the C library zeroing what the kernel left, write at most
        // `bytes` bytes into `words`, which holds that many.
        let rc = unsafe { libc::sched_getaffinity(0, bytes, words.as_mut_ptr().cast::<libc::cpu_set_t>()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    })?;
    Ok(CpuList(cpus_in_mask(&words)))
}

/// Reads a CPU mask with `get`, which fails with EINVAL while the buffer has fewer bits than the
/// kernel has possible CPUs: from glibc's 1,024 bits, doubled up to [`MAX_CPUS`].
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn read_mask(mut get: impl FnMut(&mut [MaskWord]) -> std::io::Result<()>) -> std::io::Result<Vec<MaskWord>> {
    let mut words: Vec<MaskWord> = vec![0; 1024 / WORD_BITS];
    loop {
        match get(&mut words) {
            Ok(()) => return Ok(words),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && words.len() * WORD_BITS < MAX_CPUS => {
                words = vec![0; words.len() * 2];
            }
            Err(e) => return Err(e),
        }
    }
}

/// Restricts the calling thread to `cpus` (threads it starts afterwards inherit it).
///
/// A CPU beyond the kernel's possible CPUs is dropped without an error (the kernel reads no
/// further), so check the list with [`check_available`] first, as a replica's start does.
#[cfg(target_os = "linux")]
pub fn pin_current_thread(cpus: &CpuList) -> std::io::Result<()> {
    // A mask just long enough for the largest CPU: the kernel takes the bits it lacks as 0.
    let words = mask_of(cpus);
    let bytes = std::mem::size_of_val(words.as_slice());
    // SAFETY: the kernel reads at most `bytes` bytes from `words`, which holds that many.
    if unsafe { libc::sched_setaffinity(0, bytes, words.as_ptr().cast::<libc::cpu_set_t>()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The CPUs whose bits are set in `words`, the kernel's layout: bit `n % WORD_BITS` of word
/// `n / WORD_BITS` is CPU `n`.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn cpus_in_mask(words: &[MaskWord]) -> Vec<usize> {
    let mut cpus = Vec::new();
    for (w, &word) in words.iter().enumerate() {
        for bit in 0..WORD_BITS {
            if word & (1 << bit) != 0 {
                cpus.push(w * WORD_BITS + bit);
            }
        }
    }
    cpus
}

/// The mask of `cpus` in the kernel's layout (see [`cpus_in_mask`]), at least one word.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn mask_of(cpus: &CpuList) -> Vec<MaskWord> {
    let len = cpus.cpus().last().map_or(1, |&last| last / WORD_BITS + 1);
    let mut words: Vec<MaskWord> = vec![0; len];
    for &cpu in cpus.cpus() {
        words[cpu / WORD_BITS] |= 1 << (cpu % WORD_BITS);
    }
    words
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
        let cases: [(&str, &[usize]); 7] = [
            ("0", &[0]),
            ("3-5", &[3, 4, 5]),
            ("0,2,4-5", &[0, 2, 4, 5]),
            ("5,1-2,2", &[1, 2, 5]),
            (" 7 , 1 ", &[1, 7]),
            ("1023", &[1023]),
            ("1024-1025", &[1024, 1025]),
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
            ("65536", "beyond the largest"),
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

    #[test]
    fn masks_have_the_kernels_layout_past_glibcs_1024_cpus() {
        let last_bit = WORD_BITS - 1;
        let cpus: CpuList = format!("0,{last_bit}-{WORD_BITS},1500").parse().expect("a CPU list");
        let words = mask_of(&cpus);
        assert_eq!(words.len(), 1500 / WORD_BITS + 1);
        assert_eq!(words[0], 1 | 1 << last_bit);
        assert_eq!(words[1], 1);
        assert_eq!(words[1500 / WORD_BITS], 1 << (1500 % WORD_BITS));
        assert_eq!(cpus_in_mask(&words), cpus.cpus());
        assert_eq!(mask_of(&CpuList(Vec::new())), vec![0]);
    }

    #[test]
    fn a_mask_is_read_into_a_buffer_doubled_until_the_kernel_takes_it() {
        let einval = || std::io::Error::from_raw_os_error(libc::EINVAL);
        // A kernel counting 3,000 CPUs: 1,024 and 2,048 bits are refused, 4,096 taken.
        let mut lengths = Vec::new();
        let words = read_mask(|words| {
            lengths.push(words.len() * WORD_BITS);
            if words.len() * WORD_BITS < 3000 {
                return Err(einval());
            }
            words[3000 / WORD_BITS] = 1 << (3000 % WORD_BITS);
            Ok(())
        })
        .expect("read at 4,096 bits");
        assert_eq!(lengths, [1024, 2048, 4096]);
        assert_eq!(cpus_in_mask(&words), [3000]);
        // One that refuses every size: the reading stops at MAX_CPUS with the kernel's error.
        let mut tries = 0;
        let err = read_mask(|_| {
            tries += 1;
            Err(einval())
        })
        .expect_err("never taken");
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
        assert_eq!(tries, (MAX_CPUS / 1024).trailing_zeros() + 1);
        // Any other error is returned at once.
        let mut tries = 0;
        let err = read_mask(|_| {
            tries += 1;
            Err(std::io::Error::from_raw_os_error(libc::EPERM))
        })
        .expect_err("refused");
        assert_eq!((err.raw_os_error(), tries), (Some(libc::EPERM), 1));
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
        // The first CPU it may not use, and one past glibc's 1,024 that it may not use either.
        let first_missing = (0..MAX_CPUS).find(|cpu| allowed.cpus().binary_search(cpu).is_err());
        let far = (5000..MAX_CPUS).find(|cpu| allowed.cpus().binary_search(cpu).is_err());
        for cpu in first_missing.into_iter().chain(far) {
            let err = check_available(&cpu.to_string().parse().expect("a CPU number")).expect_err("refused");
            assert!(err.contains(&format!("CPU {cpu} is not available")), "{err}");
        }
    }
}
