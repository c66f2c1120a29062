//! Offline tools for data scientists: labelled incidents, the scenario generator, scoring, NAB,
//! the HTML evaluation report, and training learned baselines from history.

pub mod eval;
pub mod gen;
pub mod labels;
pub mod nab;
pub mod report;
pub mod train;
