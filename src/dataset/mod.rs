//! Offline tools for data scientists: labelled incidents, the scenario generator, and scoring.

pub mod eval;
pub mod gen;
pub mod labels;
pub mod nab;
