//! The step graph: a stable topological order, or the cycles that prevent one.

use std::collections::BTreeSet;

use crate::raw::Pos;

/// One `needs` edge: the index of the needed step and where the entry is written.
pub(crate) type Edge = (usize, Pos);

/// A cycle in `needs`: step indices, each needing the next and the last needing the first,
/// starting at the earliest-declared step.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Cycle {
    pub steps: Vec<usize>,
    /// The `needs` entry of the first step that points at the second.
    pub at: Pos,
}

/// Orders steps so each comes after everything it needs; among steps that are ready at the
/// same time, the one declared first goes first. `needs[i]` lists step `i`'s edges.
pub(crate) fn topo_order(needs: &[Vec<Edge>]) -> Result<Vec<usize>, Vec<Cycle>> {
    // How many distinct steps each step still waits for, and which steps wait for each one:
    // finishing a step touches only its dependents, so the whole sort is O(steps + edges).
    let mut waiting: Vec<usize> = Vec::with_capacity(needs.len());
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); needs.len()];
    for (i, edges) in needs.iter().enumerate() {
        let distinct: BTreeSet<usize> = edges.iter().map(|&(n, _)| n).collect();
        waiting.push(distinct.len());
        for n in distinct {
            dependents[n].push(i);
        }
    }
    let mut ready: BTreeSet<usize> = (0..needs.len()).filter(|&i| waiting[i] == 0).collect();
    let mut order = Vec::with_capacity(needs.len());
    while let Some(done) = ready.pop_first() {
        order.push(done);
        for &i in &dependents[done] {
            waiting[i] -= 1;
            if waiting[i] == 0 {
                ready.insert(i);
            }
        }
    }
    if order.len() == needs.len() {
        return Ok(order);
    }
    let mut sorted = vec![false; needs.len()];
    for &i in &order {
        sorted[i] = true;
    }
    let stuck: BTreeSet<usize> = (0..needs.len()).filter(|&i| !sorted[i]).collect();
    Err(find_cycles(needs, &stuck))
}

/// Every step in `stuck` needs another stuck step, so following needs from any of them must
/// come round to a cycle. Finds each cycle once.
fn find_cycles(needs: &[Vec<Edge>], stuck: &BTreeSet<usize>) -> Vec<Cycle> {
    let mut seen = BTreeSet::new();
    let mut cycles = Vec::new();
    for &start in stuck {
        let mut path = Vec::new();
        let mut cur = start;
        while seen.insert(cur) {
            path.push(cur);
            cur = match needs[cur].iter().find(|(n, _)| stuck.contains(n)) {
                Some(&(next, _)) => next,
                None => break,
            };
        }
        if let Some(from) = path.iter().position(|&s| s == cur) {
            cycles.push(close(needs, &path[from..]));
        }
    }
    cycles
}

/// Rotates a cycle to start at its earliest-declared step and finds the entry to blame.
fn close(needs: &[Vec<Edge>], cycle: &[usize]) -> Cycle {
    let first = (0..cycle.len()).min_by_key(|&i| cycle[i]).unwrap_or(0);
    let steps: Vec<usize> = cycle[first..]
        .iter()
        .chain(&cycle[..first])
        .copied()
        .collect();
    let next = steps.get(1).copied().unwrap_or(steps[0]);
    let at = needs[steps[0]]
        .iter()
        .find(|&&(n, _)| n == next)
        .map_or(Pos::START, |&(_, at)| at);
    Cycle { steps, at }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edges(list: &[&[usize]]) -> Vec<Vec<Edge>> {
        list.iter()
            .enumerate()
            .map(|(i, ns)| {
                ns.iter()
                    .map(|&n| {
                        (
                            n,
                            Pos {
                                line: i + 1,
                                column: n + 1,
                            },
                        )
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn order_is_stable_among_ready_steps() {
        // 0 needs 3; 1 and 2 need nothing; 3 needs 2.
        assert_eq!(
            topo_order(&edges(&[&[3], &[], &[], &[2]])),
            Ok(vec![1, 2, 3, 0])
        );
        assert_eq!(
            topo_order(&edges(&[&[], &[0], &[0], &[1, 2]])),
            Ok(vec![0, 1, 2, 3])
        );
    }

    #[test]
    fn names_each_cycle_once_from_earliest_step() {
        // 0 -> 1 -> 2 -> 1 (cycle 1,2); 3 -> 3 (self); 4 needs 0 (downstream, not a cycle).
        let cycles = topo_order(&edges(&[&[1], &[2], &[1], &[3], &[0]])).unwrap_err();
        let steps: Vec<_> = cycles.iter().map(|c| c.steps.clone()).collect();
        assert_eq!(steps, vec![vec![1, 2], vec![3]]);
        assert_eq!(cycles[0].at, Pos { line: 2, column: 3 });
        assert_eq!(cycles[1].at, Pos { line: 4, column: 4 });
    }
}

#[cfg(test)]
mod property_tests {
    use super::*;

    /// Random DAGs (edges only towards earlier nodes of a shuffled numbering) always sort.
    #[test]
    fn random_dags_come_out_topological() {
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move |n: usize| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            usize::try_from(seed >> 33).unwrap() % n
        };
        for _ in 0..200 {
            let n = 1 + next(20);
            let mut rank: Vec<usize> = (0..n).collect();
            for i in (1..n).rev() {
                rank.swap(i, next(i + 1));
            }
            let needs: Vec<Vec<Edge>> = (0..n)
                .map(|i| {
                    (0..n)
                        .filter(|&j| rank[j] < rank[i] && next(3) == 0)
                        .map(|j| (j, Pos::START))
                        .collect()
                })
                .collect();
            let order = topo_order(&needs).expect("a DAG has an order");
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..n).collect::<Vec<_>>());
            let pos = |s: usize| order.iter().position(|&o| o == s).unwrap();
            for (i, edges) in needs.iter().enumerate() {
                assert!(edges.iter().all(|&(j, _)| pos(j) < pos(i)));
            }
        }
    }
}
