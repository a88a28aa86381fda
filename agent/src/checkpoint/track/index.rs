//! Page bookkeeping of a pre-dump chain: sets of pages as sorted,
//! disjoint `(address, length)` ranges, and the runs that say where each
//! page's latest copy is. Every operation is a merge of sorted lists:
//! linear in the ranges and runs, never in the pages they span.

use crate::checkpoint::image::Run;

pub const PAGE: u64 = 4096;

/// Sorted, disjoint, page-aligned `(start, len)` ranges.
pub type Ranges = Vec<(u64, u64)>;

/// Sorts `pages` (page addresses, any order, repeats allowed) into ranges.
pub fn ranges_of_pages(mut pages: Vec<u64>) -> Ranges {
    pages.sort_unstable();
    pages.dedup();
    let mut out: Ranges = Vec::new();
    for p in pages {
        match out.last_mut() {
            Some((s, l)) if *s + *l == p => *l += PAGE,
            _ => out.push((p, PAGE)),
        }
    }
    out
}

/// Joins touching ranges of a sorted list.
pub fn coalesce(ranges: impl IntoIterator<Item = (u64, u64)>) -> Ranges {
    let mut out: Ranges = Vec::new();
    for (s, l) in ranges {
        if l == 0 {
            continue;
        }
        match out.last_mut() {
            Some((ps, pl)) if *ps + *pl >= s => *pl = (*pl).max((s + l).saturating_sub(*ps)),
            _ => out.push((s, l)),
        }
    }
    out
}

/// The spans covering sorted `ranges`, joining two whose gap is below
/// `gap` bytes.
pub fn spans(ranges: &[(u64, u64)], gap: u64) -> Ranges {
    let mut out: Ranges = Vec::new();
    for &(s, l) in ranges {
        match out.last_mut() {
            Some((ps, pl)) if s < *ps + *pl + gap => *pl = (s + l).max(*ps + *pl) - *ps,
            _ => out.push((s, l)),
        }
    }
    out
}

/// The parts of `a` outside `b`.
pub fn subtract(a: &[(u64, u64)], b: &[(u64, u64)]) -> Ranges {
    let mut out = Vec::new();
    let mut j = 0;
    for &(start, len) in a {
        let end = start + len;
        let mut at = start;
        while j < b.len() && b[j].0 + b[j].1 <= at {
            j += 1;
        }
        let mut k = j;
        while at < end && k < b.len() && b[k].0 < end {
            let (bs, bl) = b[k];
            if bs > at {
                out.push((at, bs - at));
            }
            at = at.max(bs + bl);
            k += 1;
        }
        if at < end {
            out.push((at, end - at));
        }
    }
    out
}

/// The parts of `runs` (sorted by address, disjoint) inside `keep`
/// (with `inside`) or outside it, each piece's offset moved with its
/// address. A piece of a run loses its checksum (0), which covered the
/// whole run. One merge walk of both lists.
fn split_runs(runs: &[Run], keep: &[(u64, u64)], inside: bool) -> Vec<Run> {
    let mut out = Vec::new();
    let mut j = 0;
    let mut piece = |run: &Run, s: u64, e: u64| {
        if s < e {
            out.push(Run {
                addr: s,
                offset: run.offset + (s - run.addr),
                len: e - s,
                crc32: if e - s == run.len { run.crc32 } else { 0 },
                from: run.from,
            });
        }
    };
    for run in runs {
        let end = run.addr + run.len;
        // Ranges wholly before this run cannot touch a later one either.
        while j < keep.len() && keep[j].0 + keep[j].1 <= run.addr {
            j += 1;
        }
        let mut at = run.addr;
        let mut k = j;
        while k < keep.len() && keep[k].0 < end {
            let (ks, ke) = (keep[k].0.max(run.addr), (keep[k].0 + keep[k].1).min(end));
            if inside {
                piece(run, ks, ke);
            } else {
                piece(run, at, ks);
            }
            at = at.max(ke);
            k += 1;
        }
        if !inside {
            piece(run, at, end);
        }
    }
    out
}

/// The parts of `runs` inside `ranges`.
pub fn runs_inside(runs: &[Run], ranges: &[(u64, u64)]) -> Vec<Run> {
    split_runs(runs, ranges, true)
}

/// The parts of `runs` outside `ranges`.
pub fn runs_outside(runs: &[Run], ranges: &[(u64, u64)]) -> Vec<Run> {
    split_runs(runs, ranges, false)
}

/// Where `a` and `b` overlap.
pub fn intersect(a: &[(u64, u64)], b: &[(u64, u64)]) -> Ranges {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() && j < b.len() {
        let (s, e) = (a[i].0.max(b[j].0), (a[i].0 + a[i].1).min(b[j].0 + b[j].1));
        if s < e {
            out.push((s, e - s));
        }
        if a[i].0 + a[i].1 < b[j].0 + b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// The ranges `runs` cover.
pub fn covered(runs: &[Run]) -> Ranges {
    coalesce(runs.iter().map(|r| (r.addr, r.len)))
}

/// Runs as seen one image further down the chain: each `from` plus one,
/// their checksums (of the ancestor's own bytes) dropped.
pub fn inherited(runs: &[Run]) -> Vec<Run> {
    runs.iter()
        .map(|r| Run {
            from: r.from + 1,
            crc32: 0,
            ..*r
        })
        .collect()
}

/// Two sets of runs over disjoint pages, as one in address order.
pub fn merge(mut a: Vec<Run>, b: Vec<Run>) -> Vec<Run> {
    a.extend(b);
    a.sort_unstable_by_key(|r| r.addr);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(addr: u64, pages: u64, offset: u64) -> Run {
        Run {
            addr: addr * PAGE,
            offset: offset * PAGE,
            len: pages * PAGE,
            crc32: 7,
            from: 1,
        }
    }

    fn r(s: u64, n: u64) -> (u64, u64) {
        (s * PAGE, n * PAGE)
    }

    #[test]
    fn sets_of_ranges() {
        assert_eq!(
            ranges_of_pages(vec![3 * PAGE, PAGE, 2 * PAGE, 9 * PAGE, PAGE]),
            vec![r(1, 3), r(9, 1)]
        );
        assert_eq!(
            subtract(&[r(0, 10)], &[r(2, 2), r(5, 1), r(9, 4)]),
            vec![r(0, 2), r(4, 1), r(6, 3)]
        );
        assert_eq!(
            subtract(&[r(0, 2), r(4, 2)], &[r(1, 4)]),
            vec![r(0, 1), r(5, 1)]
        );
        assert_eq!(subtract(&[r(0, 2)], &[]), vec![r(0, 2)]);
        assert_eq!(
            intersect(&[r(0, 10), r(20, 5)], &[r(5, 17)]),
            vec![r(5, 5), r(20, 2)]
        );
        assert_eq!(
            coalesce([r(0, 2), r(2, 2), r(5, 1)]),
            vec![r(0, 4), r(5, 1)]
        );
    }

    #[test]
    fn runs_split_with_their_offsets() {
        let runs = vec![run(0, 4, 100), run(10, 2, 50)];
        let dirty = vec![r(1, 1), r(11, 3)];
        let kept = runs_outside(&runs, &dirty);
        assert_eq!(
            kept,
            vec![
                Run {
                    crc32: 0,
                    ..run(0, 1, 100)
                },
                Run {
                    crc32: 0,
                    ..run(2, 2, 102)
                },
                Run {
                    crc32: 0,
                    ..run(10, 1, 50)
                },
            ]
        );
        let inside = runs_inside(&runs, &[r(0, 20)]);
        assert_eq!(inside, runs, "a whole run keeps its checksum");
        assert_eq!(covered(&kept), vec![r(0, 1), r(2, 2), r(10, 1)]);
        assert_eq!(inherited(&kept)[0].from, 2);
    }

    /// Against a page-by-page reference, on random runs and ranges: the
    /// pieces inside and outside partition the runs' pages exactly, each
    /// with the offset its page had.
    #[test]
    fn splits_match_a_page_by_page_reference() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..300 {
            let (mut runs, mut keep) = (Vec::new(), Vec::new());
            let mut at = next(3);
            while at < 200 {
                let n = 1 + next(6);
                runs.push(run(at, n, 1000 + at * 2));
                at += n + next(3);
            }
            let mut at = next(4);
            while at < 200 {
                let n = 1 + next(5);
                keep.push(r(at, n));
                at += n + 1 + next(4);
            }
            let page_of = |rs: &[Run]| -> Vec<(u64, u64)> {
                rs.iter()
                    .flat_map(|x| {
                        (0..x.len / PAGE).map(move |i| (x.addr / PAGE + i, x.offset / PAGE + i))
                    })
                    .collect()
            };
            let kept: std::collections::HashSet<u64> = keep
                .iter()
                .flat_map(|(s, l)| s / PAGE..(s + l) / PAGE)
                .collect();
            let all = page_of(&runs);
            let want_in: Vec<_> = all
                .iter()
                .copied()
                .filter(|(p, _)| kept.contains(p))
                .collect();
            let want_out: Vec<_> = all
                .iter()
                .copied()
                .filter(|(p, _)| !kept.contains(p))
                .collect();
            assert_eq!(
                page_of(&runs_inside(&runs, &keep)),
                want_in,
                "{runs:?} {keep:?}"
            );
            assert_eq!(
                page_of(&runs_outside(&runs, &keep)),
                want_out,
                "{runs:?} {keep:?}"
            );
        }
    }
}
