//! Which of a host's ECS calls before its slot were idle waiting: one rule for the moto fleet's
//! call log and the simulator's trace, so that both print the same figure.
//!
//! A host that decides to update reads its own instance and the failure markers, then looks at
//! the fleet (the gate: DescribeClusters, then the claims). While the fleet is full or paused it
//! sleeps and looks again, at a rate the waiting policy keeps flat as the fleet grows; that is
//! the idle wait. The look that finds room, its reads before the claim, the claim and the slot
//! are the update's own calls, as are the calls of a race it lost and every write it makes.

/// Whether `op` changes something in ECS: a write is never counted as idle waiting, even one
/// made while waiting (the waiting status an operator reads).
pub fn is_write(op: &str) -> bool {
    matches!(op, "PutAttributes" | "DeleteAttributes" | "UpdateContainerInstancesState")
}

/// Where a host's update starts among `ops` (its calls in order, none from before the release
/// was out): the round that found the release reads the host's own instance and then the fleet
/// (the gate's DescribeClusters, or the failure markers' ListAttributes). An idle host reads only
/// its instance, so the decision is the first read of the fleet, or the instance read just before
/// it where there is one. `None` if the host never read the fleet.
pub fn decision(ops: &[&str]) -> Option<usize> {
    let k = ops.iter().position(|op| matches!(*op, "DescribeClusters" | "ListAttributes"))?;
    Some(if k > 0 && ops[k - 1] == "DescribeContainerInstances" { k - 1 } else { k })
}

/// Marks which of `ops` were idle waiting. `ops` are one host's calls in order, from its
/// decision to update up to (not including) the claim that won its slot; `in_race[k]` says
/// whether call `k` fell in a race it lost (from a claim it wrote to that claim's withdrawal).
/// Idle: the reads from its first read of the gate up to (not including) its last one, which
/// starts the look that found room. A race lost counts from the gate read of the look that led
/// to it.
pub fn idle_waiting(ops: &[&str], in_race: &[bool]) -> Vec<bool> {
    let gates: Vec<usize> = ops.iter().enumerate().filter(|(_, op)| **op == "DescribeClusters").map(|(k, _)| k).collect();
    let (Some(&first), Some(&last)) = (gates.first(), gates.last()) else { return vec![false; ops.len()] };
    let racing = |k: usize| in_race.get(k).copied().unwrap_or(false);
    let mut attempt = vec![false; ops.len()];
    for k in (0..ops.len()).filter(|&k| racing(k)) {
        let look = gates.iter().rev().find(|&&g| g <= k).copied().unwrap_or(k);
        attempt[look..=k].iter_mut().for_each(|a| *a = true);
    }
    (0..ops.len()).map(|k| k >= first && k < last && !is_write(ops[k]) && !attempt[k]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle(ops: &[&str], in_race: &[bool]) -> Vec<usize> {
        idle_waiting(ops, in_race).iter().enumerate().filter(|(_, i)| **i).map(|(k, _)| k).collect()
    }

    #[test]
    fn the_decision_is_the_first_read_of_the_fleet_with_the_rounds_instance_read() {
        let idle_polls = ["DescribeContainerInstances", "DescribeContainerInstances"];
        assert_eq!(decision(&idle_polls), None);
        assert_eq!(decision(&["DescribeContainerInstances", "DescribeContainerInstances", "DescribeClusters"]), Some(1));
        assert_eq!(decision(&["DescribeContainerInstances", "ListAttributes", "DescribeClusters"]), Some(0));
        assert_eq!(decision(&["DescribeClusters", "ListAttributes"]), Some(0));
    }

    #[test]
    fn one_look_that_finds_room_has_no_idle_wait() {
        let ops = ["ListAttributes", "DescribeContainerInstances", "DescribeClusters", "ListAttributes"];
        assert_eq!(idle(&ops, &[false; 4]), Vec::<usize>::new());
    }

    #[test]
    fn the_looks_at_a_full_fleet_are_idle_and_the_last_look_and_the_writes_are_not() {
        let ops = [
            "ListAttributes",             // 0 the failure markers: the decision
            "DescribeClusters",           // 1 a look at a full fleet
            "ListAttributes",             // 2
            "PutAttributes",              // 3 the waiting status
            "DescribeClusters",           // 4 another
            "ListAttributes",             // 5
            "DescribeClusters",           // 6 the look that finds room
            "ListAttributes",             // 7
            "DescribeContainerInstances", // 8 the opt-out read before claiming
        ];
        assert_eq!(idle(&ops, &[false; 9]), vec![1, 2, 4, 5]);
    }

    #[test]
    fn a_lost_race_is_the_updates_own_cost() {
        let ops = ["DescribeClusters", "ListAttributes", "PutAttributes", "ListAttributes", "DeleteAttributes", "DescribeClusters", "ListAttributes"];
        let race = [false, false, true, true, true, false, false];
        assert_eq!(idle(&ops, &race), Vec::<usize>::new(), "the look that led to the race is the race's");
        let waited_first = ["DescribeClusters", "ListAttributes", "DescribeClusters", "ListAttributes", "PutAttributes", "ListAttributes", "DeleteAttributes", "DescribeClusters"];
        let race = [false, false, false, false, true, true, true, false];
        assert_eq!(idle(&waited_first, &race), vec![0, 1]);
    }
}
