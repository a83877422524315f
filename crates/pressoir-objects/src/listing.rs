//! Listing a sorted key index the way S3 does: prefix, delimiter roll-up into common
//! prefixes, a page limit and a resume point. Pure functions, no I/O.

use base64::Engine as _;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use std::collections::BTreeMap;
use std::ops::Bound;

/// One listing request, already decoded.
#[derive(Debug, Clone, Default)]
pub struct Query<'a> {
    pub prefix: &'a str,
    pub delimiter: Option<&'a str>,
    /// Resume strictly after this key or common prefix.
    pub after: Option<&'a str>,
    pub max: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry<'a, V> {
    Object(&'a str, &'a V),
    Prefix(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<'a, V> {
    pub entries: Vec<Entry<'a, V>>,
    pub truncated: bool,
}

impl<V> Page<'_, V> {
    /// The key or common prefix to resume after, when there is more.
    pub fn next_marker(&self) -> Option<String> {
        if !self.truncated {
            return None;
        }
        self.entries.last().map(|e| match e {
            Entry::Object(k, _) => (*k).to_string(),
            Entry::Prefix(p) => p.clone(),
        })
    }
}

pub fn list<'a, V>(index: &'a BTreeMap<String, V>, q: &Query<'_>) -> Page<'a, V> {
    let mut page = Page {
        entries: Vec::new(),
        truncated: false,
    };
    let start: Bound<&str> = match q.after {
        Some(a) if a >= q.prefix => Bound::Excluded(a),
        _ => Bound::Included(q.prefix),
    };
    // Resuming after a common prefix skips every key under it.
    let skip_under = match (q.after, q.delimiter) {
        (Some(a), Some(d))
            if a.starts_with(q.prefix) && a.ends_with(d) && a.len() > q.prefix.len() =>
        {
            Some(a)
        }
        _ => None,
    };
    if q.max == 0 {
        return page;
    }
    let mut last_prefix: Option<String> = None;
    for (key, v) in index.range::<str, _>((start, Bound::Unbounded)) {
        if !key.starts_with(q.prefix) {
            break;
        }
        if let Some(s) = skip_under
            && key.starts_with(s)
        {
            continue;
        }
        if let Some(d) = q.delimiter.filter(|d| !d.is_empty())
            && let Some(pos) = key[q.prefix.len()..].find(d)
        {
            let cp = &key[..q.prefix.len() + pos + d.len()];
            if last_prefix.as_deref() == Some(cp) {
                continue;
            }
            if page.entries.len() >= q.max {
                page.truncated = true;
                break;
            }
            last_prefix = Some(cp.to_string());
            page.entries.push(Entry::Prefix(cp.to_string()));
            continue;
        }
        if page.entries.len() >= q.max {
            page.truncated = true;
            break;
        }
        page.entries.push(Entry::Object(key, v));
    }
    page
}

/// S3's `encoding-type=url`: percent-encode all but unreserved characters and `/`.
/// Clients decode with `unquote_plus`, so `+` and space must both be encoded.
const URL_KEY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

pub fn url_encode(s: &str) -> String {
    utf8_percent_encode(s, URL_KEY).to_string()
}

/// An opaque ListObjectsV2 continuation token for a resume point.
pub fn encode_token(marker: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(marker.as_bytes())
}

pub fn decode_token(token: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(keys: &[&str]) -> BTreeMap<String, ()> {
        keys.iter().map(|k| (k.to_string(), ())).collect()
    }

    fn names<V>(p: &Page<'_, V>) -> Vec<String> {
        p.entries
            .iter()
            .map(|e| match e {
                Entry::Object(k, _) => k.to_string(),
                Entry::Prefix(p) => format!("P:{p}"),
            })
            .collect()
    }

    #[test]
    fn prefix_and_delimiter_roll_up() {
        let idx = index(&["a/1", "a/2", "a/b/3", "b", "c/x", "d"]);
        let p = list(
            &idx,
            &Query {
                prefix: "",
                delimiter: Some("/"),
                after: None,
                max: 1000,
            },
        );
        assert_eq!(names(&p), ["P:a/", "b", "P:c/", "d"]);
        let p = list(
            &idx,
            &Query {
                prefix: "a/",
                delimiter: Some("/"),
                after: None,
                max: 1000,
            },
        );
        assert_eq!(names(&p), ["a/1", "a/2", "P:a/b/"]);
        assert!(!p.truncated);
    }

    #[test]
    fn pages_resume_without_repeats_or_gaps() {
        let idx = index(&["a/1", "a/2", "a/b/3", "b", "c/x", "d"]);
        let mut after: Option<String> = None;
        let mut all = Vec::new();
        loop {
            let p = list(
                &idx,
                &Query {
                    prefix: "",
                    delimiter: Some("/"),
                    after: after.as_deref(),
                    max: 1,
                },
            );
            all.extend(names(&p));
            match p.next_marker() {
                Some(m) => after = Some(m),
                None => break,
            }
        }
        assert_eq!(all, ["P:a/", "b", "P:c/", "d"]);
        let p = list(
            &idx,
            &Query {
                prefix: "",
                delimiter: None,
                after: Some("a/2"),
                max: 2,
            },
        );
        assert_eq!(names(&p), ["a/b/3", "b"]);
        assert!(p.truncated);
        assert_eq!(p.next_marker().as_deref(), Some("b"));
    }

    #[test]
    fn sort_is_by_utf8_bytes() {
        let idx = index(&["é", "z", "Z", "a+b", "a b"]);
        let p = list(
            &idx,
            &Query {
                prefix: "",
                delimiter: None,
                after: None,
                max: 10,
            },
        );
        assert_eq!(names(&p), ["Z", "a b", "a+b", "z", "é"]);
    }

    #[test]
    fn url_encoding_matches_s3() {
        assert_eq!(url_encode("sp ace/a+b%c.txt"), "sp%20ace/a%2Bb%25c.txt");
        assert_eq!(url_encode("é~_-."), "%C3%A9~_-.");
        let t = encode_token("a/b c");
        assert_eq!(decode_token(&t).as_deref(), Some("a/b c"));
        assert_eq!(decode_token("!!"), None);
    }
}
