//! Offline tools for data scientists: labelled incidents, the scenario generator, scoring, NAB,
//! and the HTML evaluation report.

pub mod eval;
pub mod gen;
pub mod labels;
pub mod nab;
pub mod report;
