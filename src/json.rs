//! Reading configuration JSON so that a wrong value is named by its key path: serde alone says
//! `invalid type: string "2", expected u64` and, for a `Value`, not even where; these say
//! `at epochs: invalid type: …`. The path stops at an internally tagged enum or a flattened
//! struct (serde buffers their content), so `Schedule` reads its keys by hand (then
//! `at schedule.cut_frac: …`) and `ModelConfig::read` checks its flattened `encoder` on its own
//! to name `encoder.hidden_size`.
//!
//! Errors are [`Error::Invalid`] holding that message alone: the caller knows which file or
//! flags the text came from and names them.

use crate::error::{Error, Result};
use serde::de::DeserializeOwned;

/// Parses `text`; on error the message starts with the key path (and keeps serde_json's line
/// and column).
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut de).map_err(describe)?;
    de.end().map_err(|e| Error::invalid(e.to_string()))?;
    Ok(value)
}

/// Converts `value`; on error the message starts with the key path.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(describe)
}

fn describe(e: serde_path_to_error::Error<serde_json::Error>) -> Error {
    let path = e.path().to_string();
    let inner = e.into_inner().to_string();
    Error::invalid(if path == "." {
        inner
    } else {
        under(&path, &inner)
    })
}

/// `msg` about the value at `path`: `at {path}: {msg}`, or, when `msg` names a key path of its
/// own (a value read by hand, as `crate::train::schedule` and `ModelConfig::read`'s encoder are), the
/// two joined: `at {path}.{its path}: …`.
pub fn under(path: &str, msg: &str) -> String {
    match msg.strip_prefix("at ") {
        Some(rest) => format!("at {path}.{rest}"),
        None => format!("at {path}: {msg}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[allow(dead_code)]
        cut_frac: f64,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        #[allow(dead_code)]
        max_steps: Option<u64>,
        #[allow(dead_code)]
        schedule: Option<Inner>,
    }

    #[test]
    fn errors_name_the_key_path() {
        let e = from_str::<Outer>("{\"max_steps\": \"2\"}")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("at max_steps: invalid type: string \"2\""),
            "{e}"
        );
        assert!(e.contains("line 1"), "{e}");
        let v = serde_json::json!({"schedule": {"cut_frac": "x"}});
        let e = from_value::<Outer>(v).unwrap_err().to_string();
        assert!(e.starts_with("at schedule.cut_frac: invalid type"), "{e}");
        let e = from_str::<Outer>("{\"max_step\": 2}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `max_step`"), "{e}");
        let e = from_str::<Outer>("{} x").unwrap_err().to_string();
        assert!(e.contains("trailing characters"), "{e}");
        assert!(from_str::<Outer>("{\"max_steps\": 2}").is_ok());
    }
}
