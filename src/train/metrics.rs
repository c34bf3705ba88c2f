//! Classification metrics: accuracy, macro-F1 (mean over classes of 2PR/(P+R), a class with no
//! predictions and no examples counting as F1 = 0 as scikit-learn's zero_division=0) and the
//! confusion matrix (rows = true class, columns = predicted).

use serde::Serialize;

/// The metrics of a labelled data set; `loss` is the mean cross-entropy per example.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Metrics {
    /// Mean cross-entropy per example (nats).
    pub loss: f64,
    /// Fraction of examples whose most probable class is their label, 0 to 1.
    pub accuracy: f64,
    /// Mean over classes of each class's F1, 0 to 1.
    pub macro_f1: f64,
    /// `confusion[true][predicted]`: example counts, `C × C`.
    pub confusion: Vec<Vec<u64>>,
    /// Examples counted.
    pub examples: u64,
}

/// Accumulates predictions batch by batch.
pub struct MetricsAcc {
    confusion: Vec<Vec<u64>>,
    loss_sum: f64,
    n: u64,
}

impl MetricsAcc {
    /// An empty accumulator for `num_classes` classes.
    pub fn new(num_classes: usize) -> Self {
        Self {
            confusion: vec![vec![0; num_classes]; num_classes],
            loss_sum: 0.0,
            n: 0,
        }
    }
    /// `mean_loss` is the batch's mean loss over its `labels.len()` examples.
    pub fn add(&mut self, labels: &[i64], predictions: &[i64], mean_loss: f64) {
        for (&y, &p) in labels.iter().zip(predictions) {
            self.confusion[y as usize][p as usize] += 1;
        }
        self.loss_sum += mean_loss * labels.len() as f64;
        self.n += labels.len() as u64;
    }
    /// The metrics of everything added (all 0 when nothing was).
    pub fn finish(self) -> Metrics {
        let k = self.confusion.len();
        let correct: u64 = (0..k).map(|i| self.confusion[i][i]).sum();
        let f1s = (0..k).map(|c| {
            let tp = self.confusion[c][c] as f64;
            let predicted: u64 = (0..k).map(|r| self.confusion[r][c]).sum();
            let actual: u64 = self.confusion[c].iter().sum();
            let denom = predicted as f64 + actual as f64;
            if denom == 0.0 {
                0.0
            } else {
                2.0 * tp / denom
            }
        });
        let n = self.n.max(1) as f64;
        Metrics {
            loss: self.loss_sum / n,
            accuracy: correct as f64 / n,
            macro_f1: f1s.sum::<f64>() / k.max(1) as f64,
            confusion: self.confusion,
            examples: self.n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macro_f1_by_hand() {
        // confusion [[3, 1], [2, 4]]: F1_0 = 6/(5+4) = 2/3, F1_1 = 8/(5+6) = 8/11.
        let mut m = MetricsAcc::new(2);
        m.add(
            &[0, 0, 0, 0, 1, 1, 1, 1, 1, 1],
            &[0, 0, 0, 1, 0, 0, 1, 1, 1, 1],
            0.5,
        );
        let r = m.finish();
        assert_eq!(r.confusion, vec![vec![3, 1], vec![2, 4]]);
        assert!((r.accuracy - 0.7).abs() < 1e-12);
        assert!((r.macro_f1 - (2.0 / 3.0 + 8.0 / 11.0) / 2.0).abs() < 1e-12);
        assert!((r.loss - 0.5).abs() < 1e-12);
    }
}
