//! Table schema changes: the job's schema against the one the table records, field by field.
//!
//! A change is *compatible* when every file written before reads under the new schema with no
//! value lost or misread: an added nullable column (older rows read as null), a column made
//! nullable, a widening (integer → long, integer → double, float → double, a decimal with
//! more integer digits at the same scale). A removed column is *incompatible*: readers still
//! read every file (older ones keep the column, readers no longer see it), but values stop
//! being loaded, so the loader refuses to start unless the operator allows it explicitly.
//! Any other change (a narrowing or other type change, a column made required, an added
//! required column) leaves older files *unreadable* under the new schema: refused always; such
//! a schema is a new table (another `storage.url`, history reloaded with `backfill`).
//!
//! Columns are compared as Delta types (what readers see); partition columns (the layout) are
//! left out.

use serde_json::Value;

use crate::table::entry::SchemaDef;

/// One difference between the table's schema and the job's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The column, dotted for nested fields (`address.city`, `tags[]`, `attrs{}`).
    pub path: String,
    pub what: String,
    pub kind: Kind,
}

/// How bad a change is, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Compatible,
    /// Readers read every file; allowed with `--allow-incompatible-schema`.
    Incompatible,
    /// Older files do not read under the new schema: never recorded.
    Unreadable,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tag = match self.kind {
            Kind::Compatible => "compatible",
            Kind::Incompatible => "INCOMPATIBLE",
            Kind::Unreadable => "UNREADABLE",
        };
        write!(f, "{:<12}  {}: {}", tag, self.path, self.what)
    }
}

/// How the job's schema relates to the table's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The table records no schema yet, or the same columns.
    Same,
    /// Recorded at the next commit.
    Compatible(Vec<Change>),
    /// Refused unless the operator allows it.
    Incompatible(Vec<Change>),
    /// Refused: a new table.
    Unreadable(Vec<Change>),
}

impl Verdict {
    pub fn changes(&self) -> &[Change] {
        match self {
            Verdict::Same => &[],
            Verdict::Compatible(c) | Verdict::Incompatible(c) | Verdict::Unreadable(c) => c,
        }
    }

    /// The field-by-field diff, one line per change.
    pub fn report(&self) -> String {
        self.changes().iter().map(|c| format!("  {c}\n")).collect()
    }
}

/// Compares the job's schema `new` with the table's `old` (`None`: a new table).
pub fn compare(old: Option<&SchemaDef>, new: &SchemaDef) -> Verdict {
    let Some(old) = old else {
        return Verdict::Same;
    };
    if old.columns == new.columns {
        return Verdict::Same;
    }
    let parse = |s: &SchemaDef| serde_json::from_str::<Value>(&s.columns).unwrap_or(Value::Null);
    let (a, b) = (parse(old), parse(new));
    let mut changes = Vec::new();
    let skip: Vec<&str> = old
        .partition_columns
        .iter()
        .chain(&new.partition_columns)
        .map(String::as_str)
        .collect();
    fields(&a, &b, "", &skip, &mut changes);
    if changes.is_empty() {
        // Only metadata differs (say, field docs): nothing a reader sees.
        return Verdict::Same;
    }
    match changes.iter().map(|c| c.kind).max() {
        Some(Kind::Unreadable) => Verdict::Unreadable(changes),
        Some(Kind::Incompatible) => Verdict::Incompatible(changes),
        _ => Verdict::Compatible(changes),
    }
}

fn field_list(v: &Value) -> Vec<&Value> {
    v.get("fields")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

fn name(f: &Value) -> &str {
    f.get("name").and_then(Value::as_str).unwrap_or_default()
}

fn nullable(f: &Value) -> bool {
    f.get("nullable").and_then(Value::as_bool).unwrap_or(true)
}

fn join(at: &str, name: &str) -> String {
    if at.is_empty() {
        name.to_string()
    } else {
        format!("{at}.{name}")
    }
}

fn fields(old: &Value, new: &Value, at: &str, skip: &[&str], out: &mut Vec<Change>) {
    let (a, b) = (field_list(old), field_list(new));
    let top = at.is_empty();
    for fa in &a {
        if top && skip.contains(&name(fa)) {
            continue;
        }
        let path = join(at, name(fa));
        match b.iter().find(|fb| name(fb) == name(fa)) {
            None => out.push(Change {
                path,
                what: format!(
                    "removed (was {}); older files keep the column, newer ones would not have it",
                    show(&fa["type"])
                ),
                kind: Kind::Incompatible,
            }),
            Some(fb) => {
                types(&fa["type"], &fb["type"], &path, out);
                match (nullable(fa), nullable(fb)) {
                    (true, false) => out.push(Change {
                        path,
                        what: "made required (not nullable); older rows may hold nulls".into(),
                        kind: Kind::Unreadable,
                    }),
                    (false, true) => out.push(Change {
                        path,
                        what: "made nullable".into(),
                        kind: Kind::Compatible,
                    }),
                    _ => {}
                }
            }
        }
    }
    for fb in &b {
        if (top && skip.contains(&name(fb))) || a.iter().any(|fa| name(fa) == name(fb)) {
            continue;
        }
        let path = join(at, name(fb));
        if nullable(fb) {
            out.push(Change {
                path,
                what: format!(
                    "added, {} (nullable): older rows read as null",
                    show(&fb["type"])
                ),
                kind: Kind::Compatible,
            });
        } else {
            out.push(Change {
                path,
                what: format!(
                    "added, {} and required: older rows have no value (make it [\"null\", T] or give it a default)",
                    show(&fb["type"])
                ),
                kind: Kind::Unreadable,
            });
        }
    }
}

fn types(a: &Value, b: &Value, path: &str, out: &mut Vec<Change>) {
    if a == b {
        return;
    }
    let kind = |v: &Value| v.get("type").and_then(Value::as_str).map(String::from);
    match (a, b) {
        (Value::String(x), Value::String(y)) => {
            let widened = widens(x, y);
            out.push(Change {
                path: path.to_string(),
                what: if widened {
                    format!("widened from {x} to {y}")
                } else {
                    format!("type changed from {x} to {y}")
                },
                kind: if widened {
                    Kind::Compatible
                } else {
                    Kind::Unreadable
                },
            });
        }
        (Value::Object(_), Value::Object(_)) if kind(a) == kind(b) => match kind(a).as_deref() {
            Some("struct") => fields(a, b, path, &[], out),
            Some("array") => {
                let p = format!("{path}[]");
                types(&a["elementType"], &b["elementType"], &p, out);
                if a["containsNull"] != b["containsNull"] {
                    let to_null = b["containsNull"] == Value::Bool(true);
                    out.push(Change {
                        path: p,
                        what: if to_null {
                            "elements made nullable".into()
                        } else {
                            "elements made required; older rows may hold nulls".into()
                        },
                        kind: if to_null {
                            Kind::Compatible
                        } else {
                            Kind::Unreadable
                        },
                    });
                }
            }
            Some("map") => {
                let p = format!("{path}{{}}");
                types(&a["keyType"], &b["keyType"], &p, out);
                types(&a["valueType"], &b["valueType"], &p, out);
            }
            _ => out.push(Change {
                path: path.to_string(),
                what: format!("type changed from {} to {}", show(a), show(b)),
                kind: Kind::Unreadable,
            }),
        },
        _ => out.push(Change {
            path: path.to_string(),
            what: format!("type changed from {} to {}", show(a), show(b)),
            kind: Kind::Unreadable,
        }),
    }
}

/// Whether values of Delta type `from` read as `to` unchanged.
fn widens(from: &str, to: &str) -> bool {
    if let (Some((p1, s1)), Some((p2, s2))) = (decimal(from), decimal(to)) {
        return s1 == s2 && p2 >= p1;
    }
    matches!(
        (from, to),
        ("integer", "long") | ("integer", "double") | ("float", "double")
    )
}

fn decimal(t: &str) -> Option<(u32, u32)> {
    let inner = t.strip_prefix("decimal(")?.strip_suffix(')')?;
    let (p, s) = inner.split_once(',')?;
    Some((p.trim().parse().ok()?, s.trim().parse().ok()?))
}

fn show(t: &Value) -> String {
    match t {
        Value::String(s) => s.clone(),
        Value::Object(_) => t
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("type")
            .to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::schema::TableSchema;

    fn def(fields: &str) -> SchemaDef {
        let avsc = format!(r#"{{"type":"record","name":"r","fields":[{fields}]}}"#);
        let s = TableSchema::parse(&avsc).unwrap();
        crate::table::delta::types::schema_def(&s.fingerprint, "date={date}", &s.table).unwrap()
    }

    const BASE: &str = r#"{"name":"id","type":"string"},{"name":"n","type":"int"},
        {"name":"f","type":"float"},{"name":"opt","type":["null","string"]},
        {"name":"a","type":{"type":"record","name":"addr","fields":[{"name":"city","type":"string"}]}}"#;

    #[test]
    fn same_and_new_tables() {
        assert_eq!(compare(None, &def(BASE)), Verdict::Same);
        assert_eq!(compare(Some(&def(BASE)), &def(BASE)), Verdict::Same);
    }

    #[test]
    fn compatible_changes() {
        let new = def(r#"{"name":"id","type":"string"},{"name":"n","type":"long"},
            {"name":"f","type":"double"},{"name":"opt","type":["null","string"]},
            {"name":"a","type":{"type":"record","name":"addr","fields":[{"name":"city","type":"string"},
              {"name":"zip","type":["null","string"],"default":null}]}},
            {"name":"note","type":["null","string"],"default":null},
            {"name":"tier","type":"string","default":"basic"}"#);
        let v = compare(Some(&def(BASE)), &new);
        let Verdict::Compatible(c) = &v else {
            panic!("{v:?}")
        };
        let paths: Vec<&str> = c.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            vec!["n", "f", "a.zip", "note", "tier"],
            "{}",
            v.report()
        );
        assert!(v.report().contains("widened from integer to long"));
    }

    #[test]
    fn incompatible_changes_are_named_field_by_field() {
        let new = def(r#"{"name":"id","type":"long"},{"name":"n","type":"int"},
            {"name":"opt","type":"string"},
            {"name":"a","type":{"type":"record","name":"addr","fields":[{"name":"city","type":"int"}]}},
            {"name":"req","type":"string"}"#);
        let v = compare(Some(&def(BASE)), &new);
        let Verdict::Unreadable(c) = &v else {
            panic!("{v:?}")
        };
        let r = v.report();
        for (path, text, kind) in [
            ("id", "type changed from string to long", Kind::Unreadable),
            ("f", "removed", Kind::Incompatible),
            ("opt", "made required", Kind::Unreadable),
            (
                "a.city",
                "type changed from string to integer",
                Kind::Unreadable,
            ),
            ("req", "added, string and required", Kind::Unreadable),
        ] {
            assert!(
                c.iter()
                    .any(|c| c.path == path && c.what.contains(text) && c.kind == kind),
                "{path}: {r}"
            );
        }
        // A removed column alone: readers still read everything.
        let dropped = def(r#"{"name":"id","type":"string"},{"name":"n","type":"int"},
            {"name":"opt","type":["null","string"]},
            {"name":"a","type":{"type":"record","name":"addr","fields":[{"name":"city","type":"string"}]}}"#);
        assert!(matches!(
            compare(Some(&def(BASE)), &dropped),
            Verdict::Incompatible(_)
        ));
    }
}
