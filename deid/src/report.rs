//! What a run dropped and generalized, counted by schema path. Paths are made of the schema's
//! own names (`Observation.component.valueQuantity`); an element the schema does not list
//! is counted as `*` under its parent, since its name is input and could itself be an
//! identifier.

use std::collections::BTreeMap;

/// Counts of what de-identification dropped and generalized, by schema path. It holds no
/// value and no name taken from the input, so it may be logged.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Elements dropped, by path (`Patient.*` for elements the schema does not list).
    pub dropped: BTreeMap<String, usize>,
    /// Elements kept in a coarser form (a date as its year, an age as "90 or older", an
    /// address as its state, a unit as its UCUM code, a display from the shipped table).
    pub generalized: BTreeMap<String, usize>,
    /// Distinct ids (resource ids and the ids in references and `fullUrl`s) replaced.
    pub ids_replaced: usize,
}

impl Report {
    /// Counts one change at `path`; returns the joined path.
    pub(crate) fn count(&mut self, path: &[&'static str], dropped: bool) -> String {
        let path = path.join(".");
        let counts = if dropped {
            &mut self.dropped
        } else {
            &mut self.generalized
        };
        *counts.entry(path.clone()).or_default() += 1;
        path
    }
}
