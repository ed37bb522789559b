//! containerd's List filters over snapshots: `FIELD`, `FIELD==VALUE` or `FIELD!=VALUE`, selectors
//! joined by `,` (all must hold); several filters: any may hold. Fields: `name`, `parent`, `kind`
//! (`active`, `view`, `committed`), `labels.KEY` (a key with dots or odd characters quoted:
//! `labels."containerd.io/gc.root"`). Values may be quoted with `"`. Regular expressions (`~=`)
//! are refused with InvalidArgument rather than matched wrongly.

use super::error::SnapError;
use super::meta::{Kind, Record};

#[derive(Debug, PartialEq)]
enum Field {
    Name,
    Parent,
    Kind,
    Label(String),
}

#[derive(Debug, PartialEq)]
enum Test {
    Present,
    Equal(String),
    NotEqual(String),
}

/// One filter: selectors that must all hold.
#[derive(Debug, PartialEq)]
pub struct Filter(Vec<(Field, Test)>);

fn bad(filter: &str, why: &str) -> SnapError {
    SnapError::InvalidArgument(format!("snapshot filter {filter:?}: {why}"))
}

/// Reads a quoted string starting at `s[0] == '"'`; returns it and the rest.
fn quoted<'a>(filter: &str, s: &'a str) -> Result<(String, &'a str), SnapError> {
    let mut out = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &s[i + 1..])),
            '\\' => match chars.next() {
                Some((_, c)) => out.push(c),
                None => break,
            },
            c => out.push(c),
        }
    }
    Err(bad(filter, "unterminated quote"))
}

/// A field path component: quoted, or a run of characters other than `.,!=~"`.
fn component<'a>(filter: &str, s: &'a str) -> Result<(String, &'a str), SnapError> {
    if s.starts_with('"') {
        return quoted(filter, s);
    }
    let end = s.find(['.', ',', '!', '=', '~', '"']).unwrap_or(s.len());
    if end == 0 {
        return Err(bad(filter, "expected a field name"));
    }
    Ok((s[..end].trim().to_string(), &s[end..]))
}

pub fn parse(filter: &str) -> Result<Filter, SnapError> {
    let mut selectors = Vec::new();
    let mut rest = filter.trim_start();
    loop {
        let (first, r) = component(filter, rest)?;
        rest = r;
        let field = match first.as_str() {
            "name" => Field::Name,
            "parent" => Field::Parent,
            "kind" => Field::Kind,
            "labels" => {
                let Some(r) = rest.strip_prefix('.') else {
                    return Err(bad(filter, "labels needs a key: labels.KEY"));
                };
                // A label key may itself hold dots when not quoted.
                let (mut key, mut r) = component(filter, r)?;
                while let Some(more) = r.strip_prefix('.') {
                    let (k, r2) = component(filter, more)?;
                    key = format!("{key}.{k}");
                    r = r2;
                }
                rest = r;
                Field::Label(key)
            }
            other => return Err(bad(filter, &format!("unknown field {other:?}"))),
        };
        rest = rest.trim_start();
        let test = if let Some(r) = rest.strip_prefix("==").or_else(|| rest.strip_prefix('=')) {
            let (v, r) = value(filter, r)?;
            rest = r;
            Test::Equal(v)
        } else if let Some(r) = rest.strip_prefix("!=") {
            let (v, r) = value(filter, r)?;
            rest = r;
            Test::NotEqual(v)
        } else if rest.starts_with("~=") {
            return Err(bad(filter, "regular expressions (~=) are not supported"));
        } else {
            Test::Present
        };
        selectors.push((field, test));
        rest = rest.trim_start();
        if rest.is_empty() {
            return Ok(Filter(selectors));
        }
        match rest.strip_prefix(',') {
            Some(r) => rest = r.trim_start(),
            None => return Err(bad(filter, &format!("unexpected {rest:?}"))),
        }
    }
}

fn value<'a>(filter: &str, s: &'a str) -> Result<(String, &'a str), SnapError> {
    let s = s.trim_start();
    if s.starts_with('"') {
        return quoted(filter, s);
    }
    let end = s.find(',').unwrap_or(s.len());
    Ok((s[..end].trim_end().to_string(), &s[end..]))
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::View => "view",
        Kind::Active => "active",
        Kind::Committed => "committed",
    }
}

impl Filter {
    pub fn matches(&self, key: &str, rec: &Record) -> bool {
        self.0.iter().all(|(field, test)| {
            let actual: Option<&str> = match field {
                Field::Name => Some(key),
                Field::Parent => Some(rec.parent.as_str()).filter(|p| !p.is_empty()),
                Field::Kind => Some(kind_name(rec.kind)),
                Field::Label(k) => rec.labels.get(k).map(String::as_str),
            };
            match test {
                Test::Present => actual.is_some(),
                Test::Equal(v) => actual == Some(v.as_str()),
                Test::NotEqual(v) => actual != Some(v.as_str()),
            }
        })
    }
}

/// Parses every filter; a snapshot is listed when any matches (all when there is none).
pub fn parse_all(filters: &[String]) -> Result<Vec<Filter>, SnapError> {
    filters
        .iter()
        .filter(|f| !f.trim().is_empty())
        .map(|f| parse(f))
        .collect()
}

pub fn any_matches(filters: &[Filter], key: &str, rec: &Record) -> bool {
    filters.is_empty() || filters.iter().any(|f| f.matches(key, rec))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::SystemTime;

    fn rec() -> Record {
        Record {
            id: 1,
            kind: Kind::Committed,
            parent: "p".into(),
            labels: BTreeMap::from([
                ("containerd.io/gc.root".into(), "x".into()),
                ("plain".into(), "a b".into()),
            ]),
            created: SystemTime::UNIX_EPOCH,
            updated: SystemTime::UNIX_EPOCH,
            usage: None,
        }
    }

    fn m(filter: &str) -> bool {
        parse(filter).unwrap().matches("k1", &rec())
    }

    #[test]
    fn selectors() {
        assert!(m("name==k1"));
        assert!(!m("name==k2"));
        assert!(m("name!=k2"));
        assert!(m("kind==committed,parent==p"));
        assert!(!m("kind==committed,parent==q"));
        assert!(m(r#"labels."containerd.io/gc.root""#));
        assert!(m("labels.containerd.io/gc.root==x"));
        assert!(m(r#"labels.plain=="a b""#));
        assert!(!m("labels.absent"));
        assert!(m("parent"));
    }

    #[test]
    fn bad_filters_are_invalid_argument() {
        for f in [
            "size==1",
            "name~=k.*",
            r#"labels."open"#,
            "labels",
            "name==a b,",
        ] {
            assert!(
                matches!(parse(f), Err(SnapError::InvalidArgument(_))),
                "{f}"
            );
        }
        let any = parse_all(&["name==zz".into(), "kind==committed".into()]).unwrap();
        assert!(any_matches(&any, "k1", &rec()));
        assert!(any_matches(&[], "k1", &rec()));
    }
}
