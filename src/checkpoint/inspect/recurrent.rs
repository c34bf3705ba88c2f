//! The recurrent layers a state_dict describes, recognised for `rnnkit inspect` from PyTorch's key
//! names and shapes alone: `weight_ih_l{k}[_reverse]`, `weight_hh_l{k}`, `bias_ih_l{k}`,
//! `weight_hr_l{k}` (cells: `weight_ih`, `weight_hh`), with `weight_ih_l0: (G·H, H_in)`,
//! `weight_hh_l0: (G·H, H_out)` and `weight_hr_l0: (P, H)`; the gate multiple G is 4 for LSTM,
//! 3 for GRU and 1 for RNN (tanh and relu look the same).

use serde::Serialize;
use std::collections::HashMap;

/// A recurrent layer recognised from key names and shapes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecurrentLayer {
    /// Key prefix, e.g. `encoder.lstm.`.
    pub prefix: String,
    /// LSTM, GRU, RNN, or LSTMCell / GRUCell / RNNCell.
    pub mode: String,
    /// `input_size`, from `weight_ih_l0`.
    pub input_size: i64,
    /// `hidden_size`, from `weight_hh_l0`.
    pub hidden_size: i64,
    /// Layers found (`_l0`, `_l1`, …).
    pub num_layers: i64,
    /// Whether `_reverse` keys exist.
    pub bidirectional: bool,
    /// `proj_size`, from `weight_hr_l0` (0 without).
    pub proj_size: i64,
    /// Whether bias keys exist.
    pub bias: bool,
    /// Shapes that do not fit the configuration above.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// Finds RNN/LSTM/GRU layers (and cells) among `(name, shape)` pairs by PyTorch's key names.
pub fn recognise_recurrent(tensors: &[(String, Vec<i64>)]) -> Vec<RecurrentLayer> {
    let shapes: HashMap<&str, &Vec<i64>> = tensors.iter().map(|(k, s)| (k.as_str(), s)).collect();
    let mut out = Vec::new();
    for (name, _) in tensors {
        if let Some(prefix) = name.strip_suffix("weight_ih_l0") {
            if prefix.is_empty() || prefix.ends_with('.') {
                if let Some(l) = recognise_layer(prefix, &shapes) {
                    out.push(l);
                }
            }
        } else if let Some(prefix) = name.strip_suffix("weight_ih") {
            if prefix.is_empty() || prefix.ends_with('.') {
                if let Some(l) = recognise_cell(prefix, &shapes) {
                    out.push(l);
                }
            }
        }
    }
    out
}

fn gate_mode(g: i64, cell: bool) -> Option<String> {
    let m = match g {
        4 => "LSTM",
        3 => "GRU",
        1 => "RNN",
        _ => return None,
    };
    Some(if cell {
        format!("{m}Cell")
    } else {
        m.to_string()
    })
}

fn recognise_cell(prefix: &str, shapes: &HashMap<&str, &Vec<i64>>) -> Option<RecurrentLayer> {
    let w_ih = shapes.get(format!("{prefix}weight_ih").as_str())?;
    let w_hh = shapes.get(format!("{prefix}weight_hh").as_str())?;
    let (&[gh, input], &[gh2, hidden]) = (w_ih.as_slice(), w_hh.as_slice()) else {
        return None;
    };
    if hidden <= 0 || gh != gh2 || gh % hidden != 0 {
        return None;
    }
    let mode = gate_mode(gh / hidden, true)?;
    Some(RecurrentLayer {
        prefix: prefix.to_string(),
        mode,
        input_size: input,
        hidden_size: hidden,
        num_layers: 1,
        bidirectional: false,
        proj_size: 0,
        bias: shapes.contains_key(format!("{prefix}bias_ih").as_str()),
        problems: Vec::new(),
    })
}

fn recognise_layer(prefix: &str, shapes: &HashMap<&str, &Vec<i64>>) -> Option<RecurrentLayer> {
    let get = |k: &str| shapes.get(format!("{prefix}{k}").as_str()).copied();
    let w_ih = get("weight_ih_l0")?;
    let w_hh = get("weight_hh_l0")?;
    let (&[gh, input], &[_, h_out]) = (w_ih.as_slice(), w_hh.as_slice()) else {
        return None;
    };
    let (hidden, proj) = match get("weight_hr_l0").map(|s| s.as_slice()) {
        Some(&[p, h]) => (h, p),
        _ => (h_out, 0),
    };
    if hidden <= 0 || gh % hidden != 0 {
        return None;
    }
    let g = gh / hidden;
    let mode = gate_mode(g, false)?;
    let mut num_layers = 0;
    while get(&format!("weight_ih_l{num_layers}")).is_some() {
        num_layers += 1;
    }
    let bidirectional = get("weight_ih_l0_reverse").is_some();
    let bias = get("bias_ih_l0").is_some();
    let mut problems = Vec::new();
    let dirs = if bidirectional { 2 } else { 1 };
    let h_real = if proj > 0 { proj } else { hidden };
    for l in 0..num_layers {
        for sfx in if bidirectional {
            &["", "_reverse"][..]
        } else {
            &[""][..]
        } {
            let in_l = if l == 0 { input } else { h_real * dirs };
            let mut want = vec![
                (format!("weight_ih_l{l}{sfx}"), vec![g * hidden, in_l]),
                (format!("weight_hh_l{l}{sfx}"), vec![g * hidden, h_real]),
            ];
            if bias {
                want.push((format!("bias_ih_l{l}{sfx}"), vec![g * hidden]));
                want.push((format!("bias_hh_l{l}{sfx}"), vec![g * hidden]));
            }
            if proj > 0 {
                want.push((format!("weight_hr_l{l}{sfx}"), vec![proj, hidden]));
            }
            for (k, shape) in want {
                match get(&k) {
                    Some(s) if *s == shape => {}
                    Some(s) => {
                        problems.push(format!("{prefix}{k} has shape {s:?}, expected {shape:?}"))
                    }
                    None => problems.push(format!("{prefix}{k} is missing")),
                }
            }
        }
    }
    if proj > 0 && g != 4 {
        problems.push("weight_hr (proj_size) only exists for LSTM".into());
    }
    Some(RecurrentLayer {
        prefix: prefix.to_string(),
        mode,
        input_size: input,
        hidden_size: hidden,
        num_layers,
        bidirectional,
        proj_size: proj,
        bias,
        problems,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lstm_keys(
        prefix: &str,
        input: i64,
        hidden: i64,
        layers: i64,
        bidi: bool,
        proj: i64,
        g: i64,
    ) -> Vec<(String, Vec<i64>)> {
        let mut v = Vec::new();
        let dirs = if bidi { 2 } else { 1 };
        let h_out = if proj > 0 { proj } else { hidden };
        for l in 0..layers {
            for sfx in if bidi {
                &["", "_reverse"][..]
            } else {
                &[""][..]
            } {
                let in_l = if l == 0 { input } else { h_out * dirs };
                v.push((
                    format!("{prefix}weight_ih_l{l}{sfx}"),
                    vec![g * hidden, in_l],
                ));
                v.push((
                    format!("{prefix}weight_hh_l{l}{sfx}"),
                    vec![g * hidden, h_out],
                ));
                v.push((format!("{prefix}bias_ih_l{l}{sfx}"), vec![g * hidden]));
                v.push((format!("{prefix}bias_hh_l{l}{sfx}"), vec![g * hidden]));
                if proj > 0 {
                    v.push((format!("{prefix}weight_hr_l{l}{sfx}"), vec![proj, hidden]));
                }
            }
        }
        v
    }

    #[test]
    fn recognises_lstm_with_projection_gru_and_rnn() {
        let mut keys = lstm_keys("enc.lstm.", 10, 20, 2, true, 5, 4);
        keys.extend(lstm_keys("dec.", 7, 9, 1, false, 0, 3));
        keys.extend(lstm_keys("", 3, 4, 3, false, 0, 1));
        let found = recognise_recurrent(&keys);
        assert_eq!(found.len(), 3);
        let l = &found[0];
        assert_eq!(
            (
                l.mode.as_str(),
                l.input_size,
                l.hidden_size,
                l.num_layers,
                l.bidirectional,
                l.proj_size,
                l.bias
            ),
            ("LSTM", 10, 20, 2, true, 5, true)
        );
        assert!(l.problems.is_empty(), "{:?}", l.problems);
        assert_eq!(
            (
                found[1].mode.as_str(),
                found[1].hidden_size,
                found[1].prefix.as_str()
            ),
            ("GRU", 9, "dec.")
        );
        assert_eq!((found[2].mode.as_str(), found[2].num_layers), ("RNN", 3));
    }

    #[test]
    fn inconsistent_shapes_are_reported() {
        let mut keys = lstm_keys("", 3, 4, 2, false, 0, 4);
        keys.retain(|(k, _)| k != "weight_hh_l1");
        let found = recognise_recurrent(&keys);
        assert_eq!(found[0].problems, ["weight_hh_l1 is missing"]);
    }

    #[test]
    fn recognises_cells() {
        let keys = vec![
            ("cell.weight_ih".to_string(), vec![12, 5]),
            ("cell.weight_hh".to_string(), vec![12, 4]),
        ];
        let found = recognise_recurrent(&keys);
        assert_eq!(
            (
                found[0].mode.as_str(),
                found[0].input_size,
                found[0].hidden_size,
                found[0].bias
            ),
            ("GRUCell", 5, 4, false)
        );
    }
}
