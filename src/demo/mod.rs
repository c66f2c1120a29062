//! Demonstrations of the main job: offline on a generated scenario, and live against a local
//! broker with a real workload, an injected incident and an independent alert subscriber. The
//! broker workloads here also drive the integration tests.

pub mod kafka;
pub mod rabbitmq;
