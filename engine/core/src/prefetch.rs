//! Asking the memory system for a record before it is needed.
//!
//! Settling a lease's end reads records written seconds ago (the deal, its open entry, its
//! request, the IP's slot): each is a cache miss of ~100 ns, and a command settles one or two
//! of them. The deferred queue knows which deals it settles next, so the engine asks for them
//! a few commands early and they are in cache when their turn comes. A prefetch is only a hint:
//! it reads nothing, changes nothing and cannot fault, whatever the address.

/// Cache line size of the machines the node runs on (x86_64, and most arm64).
const LINE: usize = 64;

/// Asks for the cache lines `value` spans (up to four), without waiting for them. A record
/// need not start on a line: one of 120 bytes may span three.
#[inline]
pub(crate) fn prefetch<T>(value: &T) {
    let start = value as *const T as usize;
    let first = start / LINE;
    let last = (start + std::mem::size_of::<T>().max(1) - 1) / LINE;
    for line in first..=last.min(first + 3) {
        hint((line * LINE) as *const u8);
    }
}

#[cfg(target_arch = "x86_64")]
#[inline]
#[allow(unsafe_code)]
fn hint(address: *const u8) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    // SAFETY: `prefetch` is a hint with no architectural effect: it never faults, even on an
    // invalid address, and reads nothing the program sees. `sse` is part of x86_64's baseline,
    // so the instruction is always there; the call is `unsafe` only for its target feature.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(address as *const i8) }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn hint(_address: *const u8) {}
