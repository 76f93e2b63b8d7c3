//! `--set key=value`: dotted TOML keys (`zo.q=16`, `train.zo.epochs=2`,
//! `source.kind="physics"`) written into the config's text before it is read, so
//! that a value set on the command line is checked exactly as one in the file
//! (types, ranges, unknown keys), and the text stored in checkpoints and metrics is
//! what ran. A value is TOML (`16`, `0.1`, `true`, `"physics"`, `[1, 2]`,
//! `{ factor = 0.9, every = 100 }`); a bare word that is no TOML value (`score`) is
//! taken as a string.
use super::ConfigError;
use toml_edit::{DocumentMut, Item, Table, Value};

/// `text` with each `KEY=VALUE` of `sets` written in, in order (a later one wins).
pub fn apply(text: &str, sets: &[String]) -> Result<String, ConfigError> {
    let mut doc: DocumentMut =
        text.parse()
            .map_err(|e: toml_edit::TomlError| ConfigError::Set {
                set: String::new(),
                message: format!("the config itself does not parse: {e}"),
            })?;
    for set in sets {
        let err = |message: String| ConfigError::Set {
            set: set.clone(),
            message,
        };
        let (key, value) = split(set).map_err(err)?;
        put(&mut doc, &key, value).map_err(err)?;
    }
    Ok(doc.to_string())
}

/// The key's parts and the value of `KEY=VALUE`.
fn split(set: &str) -> Result<(Vec<String>, Value), String> {
    let (key, raw) = set
        .split_once('=')
        .ok_or_else(|| "expected KEY=VALUE, e.g. zo.q=16".to_string())?;
    let parts: Vec<String> = key
        .trim()
        .split('.')
        .map(|p| p.trim().to_string())
        .collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("{key:?} is not a dotted key such as zo.q"));
    }
    let raw = raw.trim();
    let value = match raw.parse::<Value>() {
        Ok(v) => v,
        Err(_) if is_bare_word(raw) => Value::from(raw),
        Err(e) => {
            return Err(format!(
                "{raw:?} is not a TOML value ({}); quote a string: {key}='\"text\"'",
                e.to_string().lines().last().unwrap_or("").trim()
            ))
        }
    };
    Ok((parts, value.decorated(" ", "")))
}

fn is_bare_word(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
}

/// Writes `value` at the dotted key `parts`, making the tables on the way.
fn put(doc: &mut DocumentMut, parts: &[String], value: Value) -> Result<(), String> {
    let (last, tables) = parts.split_last().ok_or("empty key")?;
    let mut item: &mut Item = doc.as_item_mut();
    for (i, part) in tables.iter().enumerate() {
        let here = parts[..=i].join(".");
        let tbl = item
            .as_table_like_mut()
            .ok_or_else(|| format!("`{}` is not a table", parts[..i].join(".")))?;
        if tbl.get(part).is_none() {
            tbl.insert(part, Item::Table(Table::new()));
        }
        item = tbl
            .get_mut(part)
            .ok_or_else(|| format!("cannot make the table `{here}`"))?;
    }
    let tbl = item
        .as_table_like_mut()
        .ok_or_else(|| format!("`{}` is not a table", tables.join(".")))?;
    tbl.insert(last, Item::Value(value));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::apply;

    fn set(text: &str, sets: &[&str]) -> Result<String, String> {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        apply(text, &sets).map_err(|e| e.to_string())
    }

    #[test]
    fn values_are_written_into_existing_and_new_tables() {
        let text = "[zo]\nq = 1 # the paper's\n[train]\nepochs = 3\n";
        let out = set(
            text,
            &[
                "zo.q=16",
                "zo.estimator=score",
                "train.zo.epochs=2",
                "source.kind=\"physics\"",
                "zo.freeze=[\"mpnn_head\"]",
            ],
        )
        .unwrap();
        let v: toml::Value = toml::from_str(&out).unwrap();
        assert_eq!(v["zo"]["q"].as_integer(), Some(16));
        assert_eq!(v["zo"]["estimator"].as_str(), Some("score"));
        assert_eq!(v["train"]["zo"]["epochs"].as_integer(), Some(2));
        assert_eq!(v["train"]["epochs"].as_integer(), Some(3));
        assert_eq!(v["source"]["kind"].as_str(), Some("physics"));
        assert_eq!(v["zo"]["freeze"][0].as_str(), Some("mpnn_head"));
    }

    #[test]
    fn malformed_sets_are_named() {
        let text = "[zo]\nq = 1\n";
        let e = set(text, &["zo.q"]).unwrap_err();
        assert!(e.contains("--set zo.q") && e.contains("KEY=VALUE"), "{e}");
        let e = set(text, &["zo..q=1"]).unwrap_err();
        assert!(e.contains("dotted key"), "{e}");
        let e = set(text, &["zo.q.x=1"]).unwrap_err();
        assert!(e.contains("`zo.q` is not a table"), "{e}");
        let e = set(text, &["zo.mu=1 2"]).unwrap_err();
        assert!(e.contains("not a TOML value"), "{e}");
    }
}
