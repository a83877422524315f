//! Names that become paths: validated once, at the edge, so that no site, app or bench name
//! can ever point outside its bench's directory.

use std::fmt;

/// A site name: a DNS name of lowercase letters, digits, hyphens and dots, at most 253
/// characters, with no empty label (so no `..`, no leading or trailing dot) and no `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SiteName(String);

/// An app name as Frappe spells it: a lowercase letter, then lowercase letters, digits or `_`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppName(String);

/// A bench name: lowercase letters, digits, `-` and `_`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BenchName(String);

/// Site folder names Frappe itself uses inside `sites/`, which no site may take.
const RESERVED_SITES: &[&str] = &["archived", "assets", "apps.txt", "common_site_config.json"];

impl SiteName {
    pub fn parse(s: &str) -> Result<SiteName, String> {
        if s.is_empty() {
            return Err("must not be empty".into());
        }
        if s.len() > 253 {
            return Err("must be at most 253 characters".into());
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.'))
        {
            return Err(format!(
                "must be a DNS name of lowercase letters, digits, hyphens and dots (found {c:?})"
            ));
        }
        for label in s.split('.') {
            if label.is_empty() {
                return Err(
                    "must not have an empty label (no '..', no leading or trailing dot)".into(),
                );
            }
            if label.len() > 63 {
                return Err("labels must be at most 63 characters".into());
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err("labels must not start or end with a hyphen".into());
            }
        }
        if RESERVED_SITES.contains(&s) {
            return Err(format!("'{s}' is reserved"));
        }
        Ok(SiteName(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AppName {
    pub fn parse(s: &str) -> Result<AppName, String> {
        let mut chars = s.chars();
        let ok_first = chars.next().is_some_and(|c| c.is_ascii_lowercase());
        if !ok_first
            || s.len() > 64
            || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err("must be a lowercase letter followed by lowercase letters, digits or '_' (at most 64)".into());
        }
        Ok(AppName(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl BenchName {
    pub fn parse(s: &str) -> Result<BenchName, String> {
        let mut chars = s.chars();
        let ok_first = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if !ok_first
            || s.len() > 64
            || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            return Err("must be lowercase letters, digits, '-' or '_' (at most 64)".into());
        }
        Ok(BenchName(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! display {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    )*};
}
display!(SiteName, AppName, BenchName);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_names() {
        for ok in [
            "a",
            "mysite",
            "my-site.example.com",
            "x1.localhost",
            "a.b.c",
        ] {
            assert!(SiteName::parse(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(254);
        for bad in [
            "",
            "../x",
            "a/b",
            "..",
            ".",
            "a..b",
            ".a",
            "a.",
            "A.com",
            "a b",
            "a_b",
            "-a",
            "a-",
            "archived",
            "a\0b",
            "é.com",
            long.as_str(),
        ] {
            assert!(SiteName::parse(bad).is_err(), "{bad:?}");
        }
        let max = format!(
            "{}.{}.{}.{}",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61)
        );
        assert_eq!(max.len(), 253);
        assert!(SiteName::parse(&max).is_ok());
    }

    #[test]
    fn app_and_bench_names() {
        assert!(AppName::parse("erpnext").is_ok());
        assert!(AppName::parse("press_app2").is_ok());
        for bad in ["", "1app", "App", "a-b", "../x", "a/b"] {
            assert!(AppName::parse(bad).is_err(), "{bad}");
        }
        assert!(BenchName::parse("bench-0001").is_ok());
        for bad in ["", "-b", "../b", "a/b", "B", "a.b"] {
            assert!(BenchName::parse(bad).is_err(), "{bad}");
        }
    }
}
