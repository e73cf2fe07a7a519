//! A gradient-boosted forest in `models/forest.py`'s flat form, evaluated row by row.
//!
//! The flat form indexes every node's two slots by `2 * node + goes_left`; a leaf's slots lead
//! back to itself, and a node that sends missing values left reads its column offset by the
//! input count, where NaN counts as -inf. Evaluating it here gives the bits numpy gives: the same
//! `<=` against the same float64 thresholds, and the leaf values added to the baseline in tree
//! order. What numpy spends on array steps per level, and scikit-learn on a call per tree, this
//! spends on a few comparisons per row and level.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// Deeper than any tree scikit-learn grows from this project's data; a bound on a tampered artifact's loop.
const MAX_DEPTH: usize = 4096;
/// Inputs a row may have: far more than any model here reads (the disk model: 22).
const MAX_FEATURES: usize = 1 << 16;

#[pyclass(frozen, module = "fleetpulse.streams._native")]
pub struct Forest {
    n_features: usize,
    nodes: Vec<Node>,
    roots: Vec<u32>,
    depth: usize,
    baseline: f64,
}

/// One node of the flat form, its two slots side by side: a row's walk reads one cache line a level.
struct Node {
    threshold: f64,
    value: f64,
    feature: u32,
    right: u32,
    left: u32,
}

fn words(raw: &[u8], what: &str) -> PyResult<Vec<[u8; 8]>> {
    if !raw.len().is_multiple_of(8) {
        return Err(PyValueError::new_err(format!(
            "{what}: {} bytes is not a whole number of 8-byte values",
            raw.len()
        )));
    }
    Ok(raw
        .chunks_exact(8)
        .map(|w| [w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]])
        .collect())
}

/// Little-endian int64 indices, each below `bound` (and even, where `even`).
fn indices(raw: &[u8], what: &str, bound: usize, even: bool) -> PyResult<Vec<usize>> {
    words(raw, what)?
        .into_iter()
        .map(|w| {
            let index = usize::try_from(i64::from_le_bytes(w))
                .ok()
                .filter(|&i| i < bound && (!even || i.is_multiple_of(2)));
            index.ok_or_else(|| PyValueError::new_err(format!("{what}: an index out of range")))
        })
        .collect()
}

fn floats(raw: &[u8], what: &str) -> PyResult<Vec<f64>> {
    Ok(words(raw, what)?
        .into_iter()
        .map(f64::from_le_bytes)
        .collect())
}

#[pymethods]
impl Forest {
    /// The flat arrays as little-endian bytes (`feature`, `child`, `roots`: int64; `threshold`,
    /// `value`: float64). Raises ValueError for arrays that would read out of bounds.
    #[new]
    #[pyo3(signature = (n_features, feature, threshold, child, value, roots, depth, baseline))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        n_features: usize,
        feature: &[u8],
        threshold: &[u8],
        child: &[u8],
        value: &[u8],
        roots: &[u8],
        depth: usize,
        baseline: f64,
    ) -> PyResult<Self> {
        if n_features == 0 || n_features > MAX_FEATURES {
            return Err(PyValueError::new_err(format!(
                "{n_features} inputs: expected 1 to {MAX_FEATURES}"
            )));
        }
        let threshold = floats(threshold, "threshold")?;
        let slots = threshold.len();
        let feature = indices(feature, "feature", 2 * n_features, false)?;
        let child = indices(child, "child", slots, true)?;
        let value = floats(value, "value")?;
        let roots = indices(roots, "roots", slots, true)?;
        if depth > MAX_DEPTH || slots > u32::MAX as usize {
            return Err(PyValueError::new_err(
                "more nodes, or deeper, than any tree this project grows",
            ));
        }
        // every node has two slots: an even count, so each node's pair is whole
        let same = feature.len() == slots && child.len() == slots && value.len() == slots;
        if !same || !slots.is_multiple_of(2) {
            return Err(PyValueError::new_err(
                "the flat arrays differ in length, or hold half a node",
            ));
        }
        let nodes = (0..slots)
            .step_by(2)
            .map(|slot| Node {
                threshold: threshold[slot],
                value: value[slot],
                feature: feature[slot] as u32, // below 2 * MAX_FEATURES
                right: (child[slot] / 2) as u32,
                left: (child[slot + 1] / 2) as u32,
            })
            .collect();
        let roots = roots.into_iter().map(|slot| (slot / 2) as u32).collect();
        Ok(Forest {
            n_features,
            nodes,
            roots,
            depth,
            baseline,
        })
    }

    /// The raw score of each row of `rows` (little-endian float64, `n_features` a row), as
    /// float64 bytes: the baseline plus every tree's leaf value, summed in tree order.
    fn decision<'py>(&self, py: Python<'py>, rows: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        let width = 8 * self.n_features;
        if !rows.len().is_multiple_of(width) {
            return Err(PyValueError::new_err(format!(
                "expected rows of {} inputs",
                self.n_features
            )));
        }
        let mut row = vec![0.0f64; 2 * self.n_features];
        let mut out = Vec::with_capacity(rows.len() / self.n_features);
        for raw in rows.chunks_exact(width) {
            let (present, missing_low) = row.split_at_mut(self.n_features);
            for ((value, low), word) in present
                .iter_mut()
                .zip(missing_low.iter_mut())
                .zip(raw.chunks_exact(8))
            {
                *value = f64::from_le_bytes([
                    word[0], word[1], word[2], word[3], word[4], word[5], word[6], word[7],
                ]);
                *low = if value.is_nan() {
                    f64::NEG_INFINITY
                } else {
                    *value
                };
            }
            let mut sum = self.baseline;
            for &root in &self.roots {
                let mut node = &self.nodes[root as usize];
                let mut at = root;
                for _ in 0..self.depth {
                    let next = if row[node.feature as usize] <= node.threshold {
                        node.left
                    } else {
                        node.right
                    };
                    if next == at {
                        break; // a leaf: both ways lead back to itself (an inner node's children follow it)
                    }
                    at = next;
                    node = &self.nodes[at as usize];
                }
                sum += node.value;
            }
            out.extend_from_slice(&sum.to_le_bytes());
        }
        Ok(PyBytes::new(py, &out))
    }
}
