//! Consumer stalls, in the spirit of Burrow's evaluation of committed offsets.
//!
//! Kafka, per group: a partition whose committed offset has not moved for `stall_after` while it
//! has had lag all along is stalled (a consumer stuck on a poison message); zero lag at any point
//! clears it. A partition that usually stays frozen longer between commits (a sink committing
//! every minute) is judged against its own learned [`Cadence`](super::Cadence) instead. If the group's membership changed during the freeze, a rebalance is under way and
//! the partition gets `stall_after_rebalance` instead. A group with zero members and lag is
//! stopped. All stalled partitions of a group make one finding on the group, listing them.
//!
//! RabbitMQ, per queue: ready messages and no consumers; or consumers that hold unacked messages
//! without acking anything, for longer than their learned ack cadence allows, while the ready
//! depth grows.

use serde::{Deserialize, Serialize};

use super::cadence::freeze_limit_ms;
use super::{AlertKind, Cadence, Detector, Finding, Severity};
use crate::config::StallConfig;
use crate::event::names;
use crate::window::{estimated_hold, Gauge};

/// What the group's entity knows about one partition at the end of an interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PartitionView<'a> {
    pub partition: &'a str,
    pub lag: Option<f64>,
    /// Last time the committed offset moved or the lag was zero: the start of any freeze.
    pub progress_at: i64,
    /// Time of the newest sample: a freeze is only as long as it has been observed, so a gap in
    /// scraping never looks like a stall.
    pub seen_at: i64,
    /// Last time the committed offset moved (`i64::MIN` if never): what shows that the group's
    /// consumers are at work.
    pub moved_at: i64,
    /// Age of the oldest unconsumed message, where the source measures it.
    pub lag_seconds: Option<f64>,
    /// How long this partition usually stays frozen with lag before it moves, once learned.
    pub cadence_ms: Option<i64>,
    /// The usual time between samples of its committed offset.
    pub spacing_ms: i64,
    /// How long before `progress_at` the sample before it came: the freeze began in that gap.
    pub progress_gap_ms: i64,
}

impl PartitionView<'_> {
    /// How long it has been seen frozen: from the sample that showed its last progress.
    pub fn frozen_seen_ms(&self) -> i64 {
        self.seen_at.saturating_sub(self.progress_at)
    }

    /// How long it has been frozen, as well as the samples tell: from halfway into the gap
    /// before the sample that showed its last progress, reaching back no further than the
    /// samples since reach forward ([`estimated_hold`]).
    pub fn frozen_ms(&self) -> i64 {
        estimated_hold(self.frozen_seen_ms(), self.progress_gap_ms)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupStallDetector {
    /// Settings come from the config in force, never from a checkpoint.
    #[serde(skip)]
    cfg: StallConfig,
    /// The most members the group has been seen with: a lone consumer restarting leaves its
    /// group empty for as long as a rebalance takes.
    most_members: f64,
    /// When it was first seen with members, whether it was empty at the last look, and whether it
    /// has emptied and filled again since: a group that has not in an hour is not one that
    /// empties between runs. (One never seen with members may be one whose exporter cannot count
    /// them.)
    with_members_since: Option<i64>,
    empty: bool,
    emptied_before: bool,
}

/// How long a group must have been watched without emptying for an empty group to be stopped
/// whatever its commit cadence.
const NEVER_EMPTIED_AFTER_MS: i64 = 3_600_000;

impl GroupStallDetector {
    pub fn new(cfg: &StallConfig) -> Self {
        GroupStallDetector {
            cfg: cfg.clone(),
            most_members: 0.0,
            with_members_since: None,
            empty: false,
            emptied_before: false,
        }
    }

    /// Rule 1 — a partition with lag whose committed offset has been frozen for
    /// `partition_stall_after` while another partition of the group (`parts`) moved on, else for
    /// `stall_after` (`stall_after_rebalance` if the membership changed meanwhile), or for
    /// `cadence_factor` times its learned cadence when that is longer, is stalled. Also used to
    /// keep stalled partitions out of backlog totals.
    pub fn partition_stalled(
        &self,
        p: &PartitionView,
        parts: &[PartitionView],
        members: &Gauge,
    ) -> bool {
        // Without committed offsets (seen_at is MIN) nothing can be judged frozen.
        let alone = frozen_alone(p, parts);
        // Frozen alone, it resembles nothing benign of a known length: the best estimate of how
        // long counts. A whole group frozen may be a rebalance: only what was seen counts.
        let frozen = if alone {
            p.frozen_ms()
        } else {
            p.frozen_seen_ms()
        };
        p.lag.is_some_and(|l| l > 0.0) && frozen >= self.freeze_limit_ms(p, alone, members)
    }

    fn freeze_limit_ms(&self, p: &PartitionView, alone: bool, members: &Gauge) -> i64 {
        let usual = self.usual_freeze_limit_ms(p, alone);
        // A rebalance takes its time, and a consumer that commits in steps may miss one of them.
        let rebalanced = members.last.is_some() && members.changed_at > p.progress_at;
        if rebalanced {
            let rebalance = self.cfg.stall_after_rebalance.as_millis() as i64;
            rebalance.max(usual + p.cadence_ms.unwrap_or(0))
        } else {
            usual
        }
    }

    /// How long the partition may stay frozen by its own cadence (`unlearned` until learned),
    /// at least the floor for a partition frozen `alone` or with its whole group.
    fn usual_freeze_limit_ms(&self, p: &PartitionView, alone: bool) -> i64 {
        let floor = if alone {
            self.cfg.partition_stall_after
        } else {
            self.cfg.stall_after
        };
        freeze_limit_ms(
            p.cadence_ms,
            p.spacing_ms,
            floor.as_millis() as i64,
            self.cfg.cadence_factor,
            self.cfg.stall_after_unlearned.as_millis() as i64,
        )
    }

    /// Rule 2 — a group with no members for `no_members_after` (`stall_after` for a group of one
    /// consumer), whose commits are overdue by its own cadence on a partition with lag, is
    /// stopped. `memberless_ms` is how long it has
    /// had none ([`memberless_for`]). A lone consumer restarting (a deploy, a rebalance) leaves
    /// its group memberless for a while but commits again before it is overdue; a batch job
    /// leaves it empty between runs. A group watched for an hour that never emptied is neither:
    /// empty with lag, it is stopped without waiting for a commit to be overdue. A group that
    /// committed after it was first seen empty has consumers at work, whatever the count says
    /// (an exporter may not count the members of every group protocol).
    fn group_stopped(&self, memberless_ms: i64, parts: &[PartitionView], members: &Gauge) -> bool {
        if parts.iter().any(|p| p.moved_at > members.changed_at) {
            return false;
        }
        let never_empties = !self.emptied_before
            && self.with_members_since.is_some_and(|t| {
                members
                    .last
                    .is_some_and(|s| s.ts - t >= NEVER_EMPTIED_AFTER_MS)
            });
        let after = if self.most_members <= 1.0 {
            self.cfg.stall_after
        } else {
            self.cfg.no_members_after
        };
        // A group never seen with members gives no sign of when it stopped, if it did.
        let unlearned = if self.with_members_since.is_some() {
            self.cfg.stall_after
        } else {
            self.cfg.stall_after_unlearned
        };
        memberless_ms >= after.as_millis() as i64
            && parts.iter().any(|p| {
                // Without members nothing will commit: the cadence alone is the limit, no floor.
                let overdue = freeze_limit_ms(
                    p.cadence_ms,
                    p.spacing_ms,
                    0,
                    self.cfg.cadence_factor,
                    unlearned.as_millis() as i64,
                );
                let frozen = p.frozen_seen_ms();
                p.lag.is_some_and(|l| l > 0.0) && (never_empties || frozen >= overdue)
            })
    }
}

/// Whether `p` is frozen alone: another partition of the group committed well after `p` froze
/// (its consumers are at work, so no rebalance holds `p` back), and `p`'s lag stands out from
/// theirs (a slow consumer leaves every partition a little behind; a stuck one piles up): more
/// than twice theirs and three standard deviations of a message count, so that at a trickle a
/// few messages waiting is never enough.
/// Partitions scraped together share their clock; the margin allows for exporters that stamp
/// each partition apart.
fn frozen_alone(p: &PartitionView, parts: &[PartitionView]) -> bool {
    const MARGIN_MS: i64 = 5_000;
    let mut moving = parts
        .iter()
        .filter(|q| q.moved_at > p.progress_at.saturating_add(MARGIN_MS))
        .peekable();
    if moving.peek().is_none() {
        return false;
    }
    let most = moving.filter_map(|q| q.lag).fold(0.0, f64::max);
    p.lag
        .is_some_and(|l| l > 2.0 * most + 3.0 * most.max(1.0).sqrt())
}

/// How long a group has had no members, or -1 while it has some (or nobody said). A group of
/// one consumer is empty whenever it restarts, for as long as that takes: only the time seen
/// empty counts against it. A larger group is not emptied in the normal course of things, and
/// the best estimate of how long it has been empty counts ([`Gauge::held_for`]).
fn memberless_for(members: &Gauge, most_members: f64) -> i64 {
    match members.last {
        Some(s) if s.value == 0.0 && most_members <= 1.0 => members.held_at_least(),
        Some(s) if s.value == 0.0 => members.held_for(),
        _ => -1,
    }
}

/// What a group's stall detector sees of one interval: every partition the group reads, and
/// its membership.
#[derive(Debug, Clone, Copy)]
pub struct GroupView<'a> {
    pub group: &'a str,
    pub partitions: &'a [PartitionView<'a>],
    pub members: &'a Gauge,
}

impl Detector for GroupStallDetector {
    type Config = StallConfig;

    fn configure(&mut self, cfg: &StallConfig) {
        self.cfg = cfg.clone();
    }

    type Input<'a> = GroupView<'a>;

    fn on_interval(&mut self, view: GroupView<'_>) -> Option<Finding> {
        let GroupView {
            group,
            partitions: parts,
            members,
        } = view;

        self.most_members = self.most_members.max(members.value().unwrap_or(0.0));
        if let Some(s) = members.last {
            if s.value > 0.0 {
                self.emptied_before |= self.empty && self.with_members_since.is_some();
                self.with_members_since.get_or_insert(s.ts);
            }
            self.empty = s.value == 0.0;
        }
        let no_members_for = memberless_for(members, self.most_members);
        let stopped = self.group_stopped(no_members_for, parts, members);
        let mut stalled: smallvec::SmallVec<[&PartitionView; 16]> = parts
            .iter()
            .filter(|p| {
                if stopped {
                    p.lag.is_some_and(|l| l > 0.0)
                } else {
                    self.partition_stalled(p, parts, members)
                }
            })
            .collect();
        if stalled.is_empty() {
            return None;
        }
        stalled.sort_by_key(|p| (p.partition.parse::<u64>().unwrap_or(u64::MAX), p.partition));
        let frozen_ms = stalled.iter().map(|p| p.frozen_ms()).max().unwrap_or(0);
        let lag: f64 = stalled.iter().filter_map(|p| p.lag).sum();
        let time_lag = stalled
            .iter()
            .filter_map(|p| p.lag_seconds)
            .reduce(f64::max);
        let aged = time_lag.map_or(String::new(), |t| format!(" (oldest waiting {t:.0} s)"));
        // What was learned of the slowest stalled partition's normal: the alert says why now.
        let usual_ms = stalled.iter().filter_map(|p| p.cadence_ms).max();
        let usual = usual_ms.map_or(String::new(), |c| {
            format!("; it usually moves within {} s", (c + 999) / 1000)
        });
        let list = stalled
            .iter()
            .map(|p| p.partition)
            .collect::<Vec<_>>()
            .join(",");
        let long = frozen_ms.max(no_members_for) >= self.cfg.critical_after.as_millis() as i64;
        let summary = if stopped {
            format!(
                "consumer group {group} stopped: no members for {} s, lag {lag:.0}{aged} on partitions {list}",
                no_members_for / 1000
            )
        } else {
            format!(
                "consumer group {group} stalled on partition{} {list}: committed offset frozen for {} s with lag {lag:.0}{aged}{usual}",
                if stalled.len() > 1 { "s" } else { "" },
                frozen_ms / 1000
            )
        };
        Some(Finding {
            kind: AlertKind::ConsumerStall,
            severity: if stopped || long {
                Severity::Critical
            } else {
                Severity::Warning
            },
            detector: if stopped {
                "group_stopped"
            } else {
                "partition_stalled"
            },
            metric: names::KAFKA_LAG,
            observed: lag,
            expected: 0.0,
            score: frozen_ms as f64 / self.cfg.stall_after.as_millis().max(1) as f64,
            summary,
            detail: vec![("partitions", list)],
            context: [("lag_messages", lag)]
                .into_iter()
                .chain(time_lag.map(|t| ("time_lag_seconds", t)))
                .chain(usual_ms.map(|c| ("usual_freeze_seconds", c as f64 / 1000.0)))
                .collect(),
        })
    }
}

/// What a RabbitMQ queue's entity knows at the end of an interval.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueueView {
    pub ready: Option<f64>,
    pub unacked: Option<f64>,
    pub consumers: Gauge,
    /// The acked (or, without acks, delivered) total: when it last moved, and how long it has
    /// held since.
    pub acks: Gauge,
    /// Redelivered total and consumer utilisation (0 to 1), where the poller reports them.
    pub redelivered: Option<f64>,
    pub utilisation: Option<f64>,
    /// The published total, where the poller reports it.
    pub published: Option<f64>,
}

/// Fewer arrivals than this say too little of how long a queue's consumers have been gone.
const MIN_ARRIVALS: f64 = 20.0;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueStallDetector {
    /// Settings come from the config in force, never from a checkpoint.
    #[serde(skip)]
    cfg: StallConfig,
    /// When acks last moved, with the ready depth and redelivered total then: to tell a growing
    /// queue from an idle one, and to count redeliveries since.
    at_last_ack: Option<LastAck>,
    /// How long acks usually pause while there is work: a batch consumer acks once a minute.
    ack_cadence: Cadence,
    /// The queue at the last sample that showed consumers: when, its ready depth and published
    /// total. What arrived since and was left unconsumed tells when they left.
    connected: Option<(i64, f64, f64)>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct LastAck {
    at: i64,
    ready: f64,
    unacked: f64,
    redelivered: f64,
    /// Whether the pause since can teach the ack cadence: messages were waiting or held when it
    /// began, and no consumer left or was found stuck during it (that pause was an incident).
    teaches: bool,
}

impl QueueStallDetector {
    pub fn new(cfg: &StallConfig) -> Self {
        QueueStallDetector {
            cfg: cfg.clone(),
            at_last_ack: None,
            ack_cadence: Cadence::default(),
            connected: None,
        }
    }

    /// Rule 3 — a queue with ready messages and no consumers for `no_consumers_after` is
    /// stalled; returns for how long. How long is what the samples show ([`Gauge::held_for`],
    /// which needs two of them: one may be a reconnect), or what the inflow left unconsumed
    /// since the last sample with consumers tells ([`Self::gone_since_inflow`]), whichever is
    /// longer: a reconnect leaves a few seconds' worth of messages ready, consumers gone for
    /// good all of them.
    fn no_consumers(&self, q: &QueueView, ready: f64) -> Option<i64> {
        if q.consumers.value() != Some(0.0) || ready <= 0.0 {
            return None;
        }
        let mut for_ms = q.consumers.held_for().max(self.gone_since_inflow(q, ready));
        // Acks after the consumers were first counted gone show some at work, whatever the count
        // says: they have been gone no longer than the acks have stood still.
        if q.acks.last.is_some() && q.acks.changed_at > q.consumers.changed_at {
            for_ms = for_ms.min(q.acks.held_for());
        }
        (for_ms >= self.cfg.no_consumers_after.as_millis() as i64).then_some(for_ms)
    }

    /// How long the consumers have been gone, judged by the share of what was published since
    /// the last sample with consumers that is still ready: all of it, and they left right after
    /// that sample; none, and they left just now. 0 where too few messages arrived to tell, or
    /// the totals fell (the broker restarted).
    fn gone_since_inflow(&self, q: &QueueView, ready: f64) -> i64 {
        let (Some((at, ready_then, published_then)), Some(published), Some(now)) =
            (self.connected, q.published, q.consumers.last.map(|s| s.ts))
        else {
            return 0;
        };
        let arrived = published - published_then;
        if arrived < MIN_ARRIVALS {
            return 0;
        }
        let left_unconsumed = ((ready - ready_then) / arrived).clamp(0.0, 1.0);
        ((now - at) as f64 * left_unconsumed) as i64
    }

    /// Rule 4 — consumers that hold unacked messages and have acked nothing for `no_acks_after`
    /// (or `cadence_factor` times their learned ack cadence, when longer) while the ready depth
    /// or the messages they hold grew are stuck (a poison message, a lock); returns for how long.
    fn unacked_stuck(&self, q: &QueueView, ready: f64, unacked: f64, last: LastAck) -> Option<i64> {
        if q.consumers.value().unwrap_or(0.0) <= 0.0 {
            return None;
        }
        let for_ms = q.acks.held_for();
        // Until the cadence is learned the floor applies: this rule also needs held messages and
        // a growing queue, so it has no need of the partitions' longer start-up grace.
        let floor = self.cfg.no_acks_after.as_millis() as i64;
        let limit = freeze_limit_ms(
            self.ack_cadence.typical(),
            q.acks.spacing,
            floor,
            self.cfg.cadence_factor,
            floor,
        );
        // Work piles up in front of them: in the queue, or (within their prefetch) in their hands
        // — more than one message there, since one slow message is not a pile.
        let piling = ready > last.ready || unacked >= last.unacked + 2.0;
        (unacked > 0.0 && piling && for_ms >= limit).then_some(for_ms)
    }

    /// The current pause in acks is an incident's, not the consumers' pace: it teaches nothing.
    fn pause_is_no_cadence(&mut self) {
        if let Some(last) = self.at_last_ack.as_mut() {
            last.teaches = false;
        }
    }

    fn finding(&self, detector: &'static str, for_ms: i64, ready: f64, summary: String) -> Finding {
        let critical = for_ms >= self.cfg.critical_after.as_millis() as i64;
        Finding {
            kind: AlertKind::ConsumerStall,
            severity: if critical {
                Severity::Critical
            } else {
                Severity::Warning
            },
            detector,
            metric: names::RABBIT_READY,
            observed: ready,
            expected: 0.0,
            score: for_ms as f64 / 1000.0,
            summary,
            detail: Vec::new(),
            context: vec![
                ("ready_messages", ready),
                ("stalled_seconds", for_ms as f64 / 1000.0),
            ],
        }
    }
}

impl Detector for QueueStallDetector {
    type Config = StallConfig;

    fn configure(&mut self, cfg: &StallConfig) {
        self.cfg = cfg.clone();
    }

    type Input<'a> = &'a QueueView;

    fn on_interval(&mut self, q: &QueueView) -> Option<Finding> {
        let ready = q.ready.unwrap_or(0.0);
        let redelivered = q.redelivered.unwrap_or(0.0);
        if q.acks.last.is_some() {
            let t = q.acks.changed_at;
            if self.at_last_ack.is_none_or(|l| l.at != t) {
                if let Some(last) = self.at_last_ack.filter(|l| l.teaches) {
                    self.ack_cadence.observe_freeze(last.at, &q.acks);
                }
                self.at_last_ack = Some(LastAck {
                    at: t,
                    ready,
                    unacked: q.unacked.unwrap_or(0.0),
                    redelivered,
                    teaches: ready > 0.0 || q.unacked.is_some_and(|u| u > 0.0),
                });
            }
        }
        match (q.consumers.last, q.published) {
            (Some(c), Some(published)) if c.value > 0.0 => {
                self.connected = Some((c.ts, ready, published));
            }
            _ => {}
        }
        if q.consumers.value() == Some(0.0) {
            self.pause_is_no_cadence();
        }
        if let Some(for_ms) = self.no_consumers(q, ready) {
            return Some(self.finding(
                "no_consumers",
                for_ms,
                ready,
                format!(
                    "no consumers for {} s while {ready:.0} messages are ready",
                    for_ms / 1000
                ),
            ));
        }
        let unacked = q.unacked.unwrap_or(0.0);
        let last = self.at_last_ack?;
        if let Some(for_ms) = self.unacked_stuck(q, ready, unacked, last) {
            let grew = if ready > last.ready {
                format!("ready grew from {:.0} to {ready:.0}", last.ready)
            } else {
                format!("the unacked grew from {:.0}", last.unacked)
            };
            self.pause_is_no_cadence();
            return Some(self.finding(
                "unacked_stuck",
                for_ms,
                ready,
                format!(
                    "{unacked:.0} messages unacked with no acks for {} s while {grew}{}",
                    for_ms / 1000,
                    consumer_context(q.utilisation, redelivered - last.redelivered)
                ),
            ));
        }
        None
    }
}

/// What else the broker says about the consumers of a stuck queue, when it says it.
fn consumer_context(utilisation: Option<f64>, redeliveries: f64) -> String {
    let mut s = String::new();
    if let Some(u) = utilisation {
        s += &format!("; consumer utilisation {:.0}%", u * 100.0);
    }
    if redeliveries > 0.0 {
        s += &format!("; {redeliveries:.0} redelivered (a poison message?)");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1000;

    fn members(value: f64, changed_at: i64) -> Gauge {
        let mut g = Gauge::default();
        g.update(changed_at, value);
        g
    }

    fn part(partition: &str, lag: f64, progress_at: i64) -> PartitionView<'_> {
        PartitionView {
            partition,
            lag: Some(lag),
            progress_at,
            seen_at: NOW,
            moved_at: progress_at,
            lag_seconds: None,
            cadence_ms: Some(15 * S),
            spacing_ms: 0,
            progress_gap_ms: 0,
        }
    }

    fn judge(p: PartitionView<'_>) -> Option<Finding> {
        let mut d = GroupStallDetector::new(&StallConfig::default());
        d.on_interval(GroupView {
            group: "sink",
            partitions: &[p],
            members: &members(1.0, 0),
        })
    }

    #[test]
    fn a_slow_committer_is_judged_by_its_own_cadence_and_the_alert_says_so() {
        let slow = |progress_at| PartitionView {
            cadence_ms: Some(60 * S),
            ..part("0", 40.0, progress_at)
        };
        assert!(judge(slow(NOW - 80 * S)).is_none(), "80 s is usual for it");
        let f = judge(slow(NOW - 95 * S)).expect("1.5 x 60 s passed");
        assert!(
            f.summary.ends_with("it usually moves within 60 s"),
            "{}",
            f.summary
        );
        assert!(f.context.contains(&("usual_freeze_seconds", 60.0)));
    }

    #[test]
    fn a_partition_frozen_while_its_group_commits_is_stalled_sooner_than_a_frozen_group() {
        let stuck = part("2", 300.0, NOW - 25 * S);
        let moving = part("3", 10.0, NOW - 5 * S);
        let judge = |parts: &[PartitionView]| {
            GroupStallDetector::new(&StallConfig::default()).on_interval(GroupView {
                group: "risk-engine",
                partitions: parts,
                members: &members(3.0, 0),
            })
        };
        let f = judge(&[stuck, moving]).expect("alone for 25 s");
        assert_eq!(f.detail, vec![("partitions", "2".to_string())]);
        // The same freeze on every partition at once is what a rebalance looks like.
        let paused = part("3", 10.0, NOW - 25 * S);
        assert!(judge(&[stuck, paused]).is_none());
        let long = part("2", 300.0, NOW - 50 * S);
        assert!(judge(&[long, part("3", 10.0, NOW - 50 * S)]).is_some());
        // A slow consumer leaves its moving partitions as far behind as the frozen one.
        assert!(judge(&[stuck, part("3", 200.0, NOW - 5 * S)]).is_none());
        // At a trickle, three messages waiting where the others have one is chance.
        let trickle = part("2", 3.0, NOW - 25 * S);
        assert!(judge(&[trickle, part("3", 1.0, NOW - 5 * S)]).is_none());
        assert!(judge(&[part("2", 6.0, NOW - 25 * S), part("3", 1.0, NOW - 5 * S)]).is_some());
        // A partition that moved only just after the freeze began may be stamped apart.
        let stamped_apart = part("3", 10.0, NOW - 22 * S);
        assert!(judge(&[stuck, stamped_apart]).is_none());
    }

    #[test]
    fn before_its_cadence_is_learned_a_partition_gets_the_longer_unlearned_limit() {
        let unlearned = |progress_at| PartitionView {
            cadence_ms: None,
            ..part("0", 40.0, progress_at)
        };
        assert!(judge(unlearned(NOW - 120 * S)).is_none());
        assert!(judge(unlearned(NOW - 185 * S)).is_some());
    }

    #[test]
    fn the_stall_carries_message_lag_and_time_lag() {
        let mut d = GroupStallDetector::new(&StallConfig::default());
        let mut p = part("3", 900.0, 40 * S);
        p.lag_seconds = Some(61.0);
        let f = d
            .on_interval(GroupView {
                group: "g",
                partitions: &[p],
                members: &members(4.0, 0),
            })
            .expect("stalled");
        assert!(
            f.summary
                .ends_with("with lag 900 (oldest waiting 61 s); it usually moves within 15 s"),
            "{}",
            f.summary
        );
        assert_eq!(
            f.context,
            vec![
                ("lag_messages", 900.0),
                ("time_lag_seconds", 61.0),
                ("usual_freeze_seconds", 15.0)
            ]
        );
    }

    const NOW: i64 = 100 * S;

    #[test]
    fn stalls_when_committed_offset_freezes_with_lag() {
        let mut d = GroupStallDetector::new(&StallConfig::default());
        let m = members(4.0, 0);
        let parts = [
            part("0", 10.0, 100 * S),
            part("3", 900.0, 50 * S),
            part("7", 400.0, 40 * S),
        ];
        let f = d
            .on_interval(GroupView {
                group: "auth",
                partitions: &parts,
                members: &m,
            })
            .expect("stalled");
        assert_eq!(f.detail, vec![("partitions", "3,7".to_string())]);
        assert_eq!(f.observed, 1300.0);
        assert_eq!(f.severity, Severity::Warning);
    }

    #[test]
    fn zero_lag_or_a_short_freeze_is_fine() {
        let mut d = GroupStallDetector::new(&StallConfig::default());
        let m = members(4.0, 0);
        assert!(d
            .on_interval(GroupView {
                group: "g",
                partitions: &[part("0", 0.0, 0)],
                members: &m
            })
            .is_none());
        assert!(d
            .on_interval(GroupView {
                group: "g",
                partitions: &[part("0", 500.0, 70 * S)],
                members: &m
            })
            .is_none());
    }

    #[test]
    fn a_gap_in_samples_is_not_a_freeze() {
        let mut d = GroupStallDetector::new(&StallConfig::default());
        let mut p = part("0", 500.0, 70 * S);
        p.seen_at = 80 * S; // nothing heard since: the freeze is only 10 s long as far as we know
        assert!(d
            .on_interval(GroupView {
                group: "g",
                partitions: &[p],
                members: &members(4.0, 0)
            })
            .is_none());
    }

    #[test]
    fn lag_without_committed_offsets_is_never_a_stall() {
        let mut d = GroupStallDetector::new(&StallConfig::default());
        let mut p = part("0", 500.0, 90 * S);
        p.seen_at = i64::MIN;
        assert!(d
            .on_interval(GroupView {
                group: "g",
                partitions: &[p],
                members: &members(4.0, 0)
            })
            .is_none());
    }

    #[test]
    fn a_rebalance_gets_more_time() {
        let mut d = GroupStallDetector::new(&StallConfig::default());
        let mut p = part("0", 500.0, 0);
        p.seen_at = 60 * S;
        assert!(d
            .on_interval(GroupView {
                group: "g",
                partitions: &[p],
                members: &members(3.0, 20 * S)
            })
            .is_none());
        p.seen_at = 130 * S;
        assert!(d
            .on_interval(GroupView {
                group: "g",
                partitions: &[p],
                members: &members(3.0, 20 * S)
            })
            .is_some());
    }

    #[test]
    fn a_sink_that_has_not_emptied_in_an_hour_is_stopped_once_empty_before_its_commit_is_due() {
        const H: i64 = 3600 * S;
        // Two consumers committing every 60 s, their last commit 55 s ago; empty since H + 15 s.
        let judge = |d: &mut GroupStallDetector, samples: &[(i64, f64)]| {
            let mut g = Gauge::default();
            for &(t, v) in samples {
                g.update(t, v);
            }
            let now = g.last.unwrap().ts;
            let p = PartitionView {
                cadence_ms: Some(60 * S),
                spacing_ms: 15 * S,
                seen_at: now,
                ..part("0", 400.0, now - 55 * S)
            };
            d.on_interval(GroupView {
                group: "orders-archive-sink",
                partitions: &[p],
                members: &g,
            })
        };
        let empty_now = [
            (H, 2.0),
            (H + 15 * S, 0.0),
            (H + 30 * S, 0.0),
            (H + 45 * S, 0.0),
        ];
        let mut watched = GroupStallDetector::new(&StallConfig::default());
        assert!(judge(&mut watched, &[(0, 2.0)]).is_none());
        let f = judge(&mut watched, &empty_now).expect("empty for 30 s");
        assert_eq!(f.detector, "group_stopped");
        // A group that has emptied before, or has been watched for less than an hour, may be a
        // batch job between runs: it waits until a commit is overdue.
        let mut batch = GroupStallDetector::new(&StallConfig::default());
        assert!(judge(&mut batch, &[(0, 2.0)]).is_none());
        assert!(judge(&mut batch, &[(0, 2.0), (600 * S, 0.0)]).is_none());
        assert!(judge(&mut batch, &[(600 * S, 0.0), (615 * S, 2.0)]).is_none());
        assert!(judge(&mut batch, &empty_now).is_none());
        let mut new = GroupStallDetector::new(&StallConfig::default());
        assert!(judge(&mut new, &[(H / 2, 2.0)]).is_none());
        assert!(judge(&mut new, &empty_now).is_none());
        // Nor does a group never seen with members: its exporter may not count them at all.
        let mut uncounted = GroupStallDetector::new(&StallConfig::default());
        assert!(judge(&mut uncounted, &[(0, 0.0)]).is_none());
        let never = [
            (H, 0.0),
            (H + 15 * S, 0.0),
            (H + 30 * S, 0.0),
            (H + 45 * S, 0.0),
        ];
        assert!(judge(&mut uncounted, &never).is_none());
    }

    #[test]
    fn a_group_without_members_is_stopped_and_critical() {
        let mut d = GroupStallDetector::new(&StallConfig::default());
        let parts = [part("0", 50.0, 55 * S), part("1", 60.0, 55 * S)];
        let healthy = [part("0", 50.0, 90 * S)];
        let four = members(4.0, 0);
        assert!(d
            .on_interval(GroupView {
                group: "g",
                partitions: &healthy,
                members: &four,
            })
            .is_none());
        let mut m = members(0.0, 60 * S);
        m.update(100 * S, 0.0);
        let f = d
            .on_interval(GroupView {
                group: "g",
                partitions: &parts,
                members: &m,
            })
            .expect("stopped");
        assert_eq!(f.severity, Severity::Critical);
        assert_eq!(f.detector, "group_stopped");
        assert_eq!(f.detail[0].1, "0,1");
    }

    #[test]
    fn a_group_that_commits_while_counted_empty_is_not_stopped() {
        // Counted for an hour, then no more (its consumers moved to a group protocol the exporter
        // cannot count), while its offsets keep moving.
        let mut d = GroupStallDetector::new(&StallConfig::default());
        let mut m = members(2.0, 0);
        for t in (0..=4200).step_by(15) {
            m.update(t * S, if t < 3600 { 2.0 } else { 0.0 });
            let moving = [PartitionView {
                seen_at: t * S,
                ..part("0", 40.0, t * S - 5 * S)
            }];
            let f = d.on_interval(GroupView {
                group: "kip848",
                partitions: &moving,
                members: &m,
            });
            assert!(f.is_none(), "at {t} s: {f:?}");
        }
    }

    #[test]
    fn a_partition_frozen_alone_counts_from_halfway_into_the_gap_before_its_last_move() {
        let d = GroupStallDetector::new(&StallConfig::default());
        // Scraped every 15 s, it moves at every scrape: the 20 s floor judges it.
        let stuck = |gap| PartitionView {
            spacing_ms: 15 * S,
            progress_gap_ms: gap,
            ..part("0", 300.0, NOW - 15 * S)
        };
        let moving = PartitionView {
            spacing_ms: 15 * S,
            ..part("1", 10.0, NOW)
        };
        let m = members(3.0, 0);
        let parts = [stuck(15 * S), moving];
        assert!(
            d.partition_stalled(&parts[0], &parts, &m),
            "seen frozen 15 s, and it last moved about 7.5 s before"
        );
        let parts = [stuck(0), moving];
        assert!(
            !d.partition_stalled(&parts[0], &parts, &m),
            "15 s seen, nothing known before"
        );
    }

    #[test]
    fn a_group_of_several_seen_empty_twice_is_stopped_by_the_estimate_of_how_long() {
        let mut d = GroupStallDetector::new(&StallConfig::default());
        let frozen = [part("0", 80.0, NOW - 40 * S)];
        let four = members(4.0, NOW - 30 * S);
        let mut view = GroupView {
            group: "g",
            partitions: &frozen,
            members: &four,
        };
        assert!(d.on_interval(view).is_none(), "four members");
        let mut once = four;
        once.update(NOW - 15 * S, 0.0);
        view.members = &once;
        assert!(d.on_interval(view).is_none(), "seen empty once");
        let mut twice = once;
        twice.update(NOW, 0.0);
        view.members = &twice;
        // 15 s seen empty, and it emptied halfway into the 15 s before: 22.5 s, past 20 s.
        assert_eq!(
            d.on_interval(view).expect("empty 22.5 s").detector,
            "group_stopped"
        );
    }

    #[test]
    fn a_lone_consumer_gone_for_a_rebalance_s_time_is_not_a_stopped_group() {
        let mut d = GroupStallDetector::new(&StallConfig::default());
        let mut m = members(1.0, 0);
        m.update(NOW - 30 * S, 0.0);
        m.update(NOW, 0.0);
        let frozen = [part("0", 80.0, NOW - 40 * S)];
        let view = GroupView {
            group: "lone",
            partitions: &frozen,
            members: &m,
        };
        assert!(d.on_interval(view).is_none(), "30 s empty: restarting");
        let mut m = members(0.0, NOW - 50 * S);
        m.update(NOW, 0.0);
        let frozen = [part("0", 80.0, NOW - 60 * S)];
        let view = GroupView {
            members: &m,
            partitions: &frozen,
            ..view
        };
        assert_eq!(
            d.on_interval(view).expect("50 s empty").detector,
            "group_stopped"
        );
    }

    #[test]
    fn a_lone_consumer_restarting_within_its_commit_cadence_is_not_a_stopped_group() {
        let mut d = GroupStallDetector::new(&StallConfig::default());
        let batch = PartitionView {
            cadence_ms: Some(180 * S),
            ..part("0", 5000.0, NOW - 150 * S)
        };
        let mut m = members(0.0, NOW - 50 * S);
        m.update(NOW, 0.0);
        let restarting = [batch];
        let view = GroupView {
            group: "batch",
            partitions: &restarting,
            members: &m,
        };
        assert!(
            d.on_interval(view).is_none(),
            "30 s without members, commit not due"
        );
        let overdue = [PartitionView {
            progress_at: NOW - 280 * S,
            ..batch
        }];
        let view = GroupView {
            partitions: &overdue,
            ..view
        };
        assert_eq!(
            d.on_interval(view).expect("overdue").detector,
            "group_stopped"
        );
    }

    /// A queue observed at `now`: consumers unchanged since `consumers_since`, acks since `acks_at`.
    fn queue(
        now: i64,
        ready: f64,
        unacked: f64,
        consumers: f64,
        consumers_since: i64,
        acks_at: i64,
    ) -> QueueView {
        let mut c = members(consumers, consumers_since);
        c.update(now, consumers);
        // Scraped every 10 s: the acked total moved at `acks_at` and has held since.
        let mut acks = members(0.0, acks_at - 10 * S);
        for t in (acks_at..now).step_by(10 * S as usize).chain([now]) {
            acks.update(t, 1.0);
        }
        QueueView {
            ready: Some(ready),
            unacked: Some(unacked),
            consumers: c,
            acks,
            redelivered: Some(0.0),
            utilisation: None,
            published: None,
        }
    }

    /// A queue detector that has seen busy consumers ack every `every` seconds until time 0.
    fn acking_every(every: i64) -> QueueStallDetector {
        let mut d = QueueStallDetector::new(&StallConfig::default());
        for t in (-20..=0).map(|i| i * every * S) {
            assert!(d
                .on_interval(&queue(t, 20.0, 50.0, 2.0, -1000 * S, t))
                .is_none());
        }
        d
    }

    #[test]
    fn a_batch_acker_is_judged_by_its_own_ack_cadence() {
        let mut d = acking_every(60);
        let mut silent_for = |secs| {
            d.on_interval(&queue(
                secs * S,
                20.0 + secs as f64,
                50.0,
                2.0,
                -1000 * S,
                0,
            ))
        };
        assert!(
            silent_for(45).is_none(),
            "45 s without acks is usual for it"
        );
        assert!(silent_for(80).is_none());
        assert_eq!(
            silent_for(95).expect("1.5 x 60 s passed").detector,
            "unacked_stuck"
        );
    }

    #[test]
    fn a_pause_while_the_consumers_were_gone_teaches_nothing_of_their_ack_pace() {
        let mut d = QueueStallDetector::new(&StallConfig::default());
        // Three acks 10 s apart with work waiting: a pace of 10 s.
        for t in (0..=3).map(|i| i * 10 * S) {
            assert!(d
                .on_interval(&queue(t, 5.0, 2.0, 1.0, -1000 * S, t))
                .is_none());
        }
        // The consumers leave for five minutes (an incident of its own), then come back.
        for t in (4..34).map(|i| i * 10 * S) {
            d.on_interval(&queue(t, 5.0 + t as f64 / 1000.0, 0.0, 0.0, 40 * S, 30 * S));
        }
        assert!(d
            .on_interval(&queue(340 * S, 300.0, 2.0, 1.0, 340 * S, 340 * S))
            .is_none());
        // Stuck 30 s later: judged by the 10 s pace, not by the five minutes without consumers.
        let f = d
            .on_interval(&queue(370 * S, 400.0, 10.0, 1.0, 340 * S, 340 * S))
            .expect("stuck past the floor");
        assert_eq!(f.detector, "unacked_stuck");
    }

    #[test]
    fn a_stuck_queue_names_its_redeliveries_and_utilisation() {
        let mut d = acking_every(10);
        assert!(d
            .on_interval(&queue(10 * S, 20.0, 50.0, 2.0, 0, 10 * S))
            .is_none());
        let mut q = queue(60 * S, 900.0, 50.0, 2.0, 0, 10 * S);
        q.redelivered = Some(7.0);
        q.utilisation = Some(0.0);
        let f = d.on_interval(&q).expect("stall");
        assert!(
            f.summary
                .ends_with("consumer utilisation 0%; 7 redelivered (a poison message?)"),
            "{}",
            f.summary
        );
    }

    #[test]
    fn consumers_gone_since_the_last_scrape_are_told_by_the_inflow_they_left_unconsumed() {
        // Scraped every 30 s: two consumers keep the queue empty, 8 messages/s arrive.
        let look = |d: &mut QueueStallDetector, t: i64, consumers: f64, ready: f64, published| {
            let mut c = Gauge::default();
            c.update(t - 30 * S, 2.0);
            c.update(t, consumers);
            d.on_interval(&QueueView {
                ready: Some(ready),
                unacked: Some(0.0),
                consumers: c,
                acks: Gauge::default(),
                redelivered: None,
                utilisation: None,
                published: Some(published),
            })
        };
        let judged = |consumers_then: f64, ready: f64, published: f64| {
            let mut d = QueueStallDetector::new(&StallConfig::default());
            assert!(look(&mut d, 0, consumers_then, 0.0, 1000.0).is_none());
            look(&mut d, 30 * S, 0.0, ready, published)
        };
        // 240 arrived, 180 still ready: gone for the last 22 s of the gap.
        let f = judged(2.0, 180.0, 1240.0).expect("gone at the first sample that shows it");
        assert_eq!(f.detector, "no_consumers");
        assert!(
            f.context.contains(&("stalled_seconds", 22.5)),
            "{:?}",
            f.context
        );
        // A reconnect of a few seconds leaves a few seconds' worth ready: one sample is a blip.
        assert!(judged(2.0, 30.0, 1240.0).is_none());
        // At a trickle, a few messages tell nothing; nor does a broker that restarted.
        assert!(judged(2.0, 5.0, 1005.0).is_none());
        assert!(judged(2.0, 180.0, 240.0).is_none());
    }

    #[test]
    fn a_queue_whose_acks_move_while_counted_without_consumers_has_some() {
        let mut d = QueueStallDetector::new(&StallConfig::default());
        for t in (1..=30).map(|i| i * 10 * S) {
            let f = d.on_interval(&queue(t, 5.0, 1.0, 0.0, 0, t));
            assert!(f.is_none(), "at {t}: {f:?}");
        }
        // Until the acks stop: then they are gone, counted or not.
        let f = d.on_interval(&queue(330 * S, 50.0, 1.0, 0.0, 0, 300 * S));
        assert_eq!(f.expect("no acks for 30 s").detector, "no_consumers");
    }

    #[test]
    fn queue_without_consumers_stalls() {
        let mut d = QueueStallDetector::new(&StallConfig::default());
        assert!(d
            .on_interval(&queue(10 * S, 100.0, 0.0, 0.0, 0, 0))
            .is_none());
        let f = d
            .on_interval(&queue(30 * S, 300.0, 0.0, 0.0, 0, 0))
            .expect("stall");
        assert_eq!(f.detector, "no_consumers");
        let mut idle = QueueStallDetector::new(&StallConfig::default());
        assert!(idle
            .on_interval(&queue(300 * S, 0.0, 0.0, 0.0, 0, 0))
            .is_none());
    }

    #[test]
    fn queue_with_unacked_pinned_and_no_acks_stalls() {
        let mut d = acking_every(10);
        assert!(d
            .on_interval(&queue(10 * S, 20.0, 50.0, 2.0, 0, 10 * S))
            .is_none());
        assert!(
            d.on_interval(&queue(22 * S, 400.0, 50.0, 2.0, 0, 10 * S))
                .is_none(),
            "12 s seen without acks (17 s, counting half the gap before) is within the floor"
        );
        let f = d
            .on_interval(&queue(60 * S, 900.0, 50.0, 2.0, 0, 10 * S))
            .expect("stall");
        assert_eq!(f.detector, "unacked_stuck");
        assert!(f.summary.contains("from 20 to 900"), "{}", f.summary);
    }

    #[test]
    fn an_idle_queue_with_no_acks_is_fine() {
        let mut d = QueueStallDetector::new(&StallConfig::default());
        for t in 1..30 {
            assert!(d
                .on_interval(&queue(t * 10 * S, 0.0, 0.0, 2.0, 0, 0))
                .is_none());
        }
    }
}
