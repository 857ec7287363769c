//! The shipped config lists every key the loader accepts, asked of the
//! loader itself.

use std::collections::BTreeSet;

use super::*;

/// A key no table accepts, so the loader answers with the keys it does.
const PROBE: &str = "zz_probe";

/// The keys the table at `path` accepts, or `None` when `path` is not a
/// table (or array of tables). Asks the loader itself: serde's
/// `deny_unknown_fields` refuses the probe key with the list of accepted ones.
fn accepted_fields(path: &[&str]) -> Option<Vec<String>> {
    for as_array in [false, true] {
        let mut doc: toml::Table = MINIMAL.parse().unwrap();
        let mut probe = toml::Table::new();
        probe.insert(PROBE.to_owned(), toml::Value::Integer(1));
        let Some((last, parents)) = path.split_last() else {
            doc.extend(probe);
            return refused_fields(&doc);
        };
        let mut table = &mut doc;
        for segment in parents {
            let entry = table
                .entry(segment.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = entry.as_table_mut()?;
        }
        if as_array {
            table.insert(
                last.to_string(),
                toml::Value::Array(vec![toml::Value::Table(probe)]),
            );
        } else {
            let entry = table
                .entry(last.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry.as_table_mut() {
                Some(existing) => existing.extend(probe),
                None => *entry = toml::Value::Table(probe),
            }
        }
        if let Some(fields) = refused_fields(&doc) {
            return Some(fields);
        }
    }
    None
}

/// The accepted keys the loader names when it refuses the probe in `doc`.
fn refused_fields(doc: &toml::Table) -> Option<Vec<String>> {
    let message = error_text(&toml::to_string(doc).unwrap());
    let (_, rest) = message.split_once(&format!("unknown field `{PROBE}`"))?;
    // "expected one of `a`, `b`", "expected `a` or `b`", or "there are no fields".
    Some(
        rest.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect(),
    )
}

/// Every key the loader accepts, as `table.key` (`auth.password.memory_kib`,
/// `route.websocket` for `[[route]]`), walking the tables from the root.
fn accepted_keys(path: &mut Vec<String>, keys: &mut BTreeSet<String>) {
    let borrowed: Vec<&str> = path.iter().map(String::as_str).collect();
    let Some(fields) = accepted_fields(&borrowed) else {
        keys.insert(path.join("."));
        return;
    };
    for field in fields {
        path.push(field);
        accepted_keys(path, keys);
        path.pop();
    }
}

/// The keys `config/authgate.toml` lists, set or commented out, as `table.key`.
fn shipped_keys(text: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut table = String::new();
    for line in text.lines() {
        let line = line.trim_start_matches([' ', '#']).trim_end();
        let header = line
            .strip_prefix("[[")
            .and_then(|l| l.strip_suffix("]]"))
            .or_else(|| line.strip_prefix('[').and_then(|l| l.strip_suffix(']')));
        if let Some(name) = header.filter(|n| {
            n.bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_')
        }) {
            table = name.to_owned();
            continue;
        }
        let Some((key, _)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            keys.insert(if table.is_empty() {
                key.to_owned()
            } else {
                format!("{table}.{key}")
            });
        }
    }
    keys
}

#[test]
fn the_shipped_config_lists_every_key_the_loader_accepts() {
    let mut accepted = BTreeSet::new();
    accepted_keys(&mut Vec::new(), &mut accepted);
    // The walk itself works: it reaches nested tables and the route array.
    for known in [
        "server.listen",
        "tokens.access_ttl",
        "store.path",
        "auth.throttle.window",
        "route.upstream",
    ] {
        assert!(
            accepted.contains(known),
            "{known} not found in {accepted:?}"
        );
    }
    let shipped = shipped_keys(include_str!("../../../config/authgate.toml"));
    let missing: Vec<_> = accepted.difference(&shipped).collect();
    assert!(
        missing.is_empty(),
        "config/authgate.toml claims to list every key but lacks {missing:?}; add each, \
         commented out with its default unless the example sets it"
    );
    let unknown: Vec<_> = shipped.difference(&accepted).collect();
    assert!(
        unknown.is_empty(),
        "config/authgate.toml lists keys the loader refuses: {unknown:?}"
    );
}
