//! mqwatch: streaming anomaly detection for the message queues of payment systems.
//!
//! The data path, in order:
//!
//! 1. [`source`] reads metric events (files; broker topics, queues and pollers) and parses them
//!    with [`event`], the one place the wire format is known.
//! 2. [`pipeline`] routes each event by its shard (Kafka topic, RabbitMQ queue) over bounded
//!    lock-free queues to the worker that owns it: no locks on the hot path.
//! 3. Workers keep per-series state in [`window`]: rolling HDR histograms, gauges, counters.
//! 4. Each time event time closes an interval, [`detect`]'s pure detectors judge every entity.
//! 5. [`alert`] turns findings into episodes (firing → resolved, stable ids) for the [`sink`]s.
//!
//! [`learn`] fits learned baselines offline and scores intervals with them in the workers.
//! [`dataset`] holds the offline tools: the scenario generator, labels and scoring.
//! [`config`] has every setting with its default; [`telemetry`] counts what came in and what was
//! refused or dropped; [`link`] tells of each broker connection (reached, lost, back); [`redact`]
//! keeps secrets out of everything printed. [`state`] keeps checkpoints, so a restart resumes
//! where the engine stood; [`scale_out`] lets several engines share the watch as one Kafka
//! consumer group. [`run`] joins sources, pipeline and sinks into a replay or a live run.

pub mod alert;
pub mod cmd;
pub mod component;
pub mod config;
pub mod dataset;
pub mod demo;
pub mod detect;
pub mod event;
pub mod invalid;
pub mod kafka;
pub mod learn;
pub mod link;
pub mod pipeline;
pub mod rabbitmq;
pub mod redact;
pub mod run;
pub mod scale_out;
pub mod serve;
pub mod shutdown;
pub mod silence;
pub mod sink;
pub mod source;
pub mod state;
pub mod status;
pub mod telemetry;
pub mod window;
