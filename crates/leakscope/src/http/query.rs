//! The endpoint's query strings, parsed by one pure function per route so
//! that they can be tested and fuzzed apart from the server (the fuzz
//! target includes this file alone). Unknown parameters are ignored, as Go's
//! `net/http/pprof` does; a value that cannot be used is a 400 with a reason.

use std::borrow::Cow;

/// The longest query string read; longer ones are refused.
pub const MAX_QUERY_BYTES: usize = 4096;

/// `/debug/pprof/heap` and `/debug/pprof/allocs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeapQuery {
    /// `debug=1` (any value but `0`): the profile as text.
    pub debug: bool,
    /// `seconds=N`: what changed over N seconds.
    pub seconds: Option<u64>,
}

/// `format=...` of `/debug/leakscope/refs` and `/debug/leakscope/report`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FormatQuery {
    pub format: Option<String>,
}

/// The decoded `key=value` pairs of a query string; the last of repeated
/// keys wins.
/// Decoded `(key, value)` pairs.
type Pairs<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

fn pairs(raw: &str) -> Result<Pairs<'_>, String> {
    if raw.len() > MAX_QUERY_BYTES {
        return Err(format!(
            "the query string is longer than {MAX_QUERY_BYTES} bytes"
        ));
    }
    Ok(form_urlencoded::parse(raw.as_bytes()).collect())
}

fn last<'a>(pairs: &'a Pairs<'_>, key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| &v[..])
}

/// Parses the heap routes' query; `seconds` must be a whole number from 1
/// to `max_seconds`.
pub fn parse_heap(raw: &str, max_seconds: u64) -> Result<HeapQuery, String> {
    let pairs = pairs(raw)?;
    let debug = last(&pairs, "debug").is_some_and(|v| v != "0");
    let seconds = match last(&pairs, "seconds") {
        None => None,
        Some(v) => match v.parse::<u64>() {
            Ok(s) if (1..=max_seconds).contains(&s) => Some(s),
            _ => {
                return Err(format!(
                    "seconds must be a whole number from 1 to {max_seconds}"
                ))
            }
        },
    };
    Ok(HeapQuery { debug, seconds })
}

/// Parses a `format=` query; the format must be one of `allowed`.
pub fn parse_format(raw: &str, allowed: &[&str]) -> Result<FormatQuery, String> {
    let pairs = pairs(raw)?;
    match last(&pairs, "format") {
        None => Ok(FormatQuery::default()),
        Some(f) if allowed.contains(&f) => Ok(FormatQuery {
            format: Some(f.to_string()),
        }),
        Some(f) => Err(format!(
            "format {:?} is not one of: {}",
            f.chars().take(64).collect::<String>(),
            allowed.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_queries() {
        assert_eq!(parse_heap("", 300), Ok(HeapQuery::default()));
        assert_eq!(
            parse_heap("debug=1&seconds=30", 300),
            Ok(HeapQuery {
                debug: true,
                seconds: Some(30)
            })
        );
        assert_eq!(parse_heap("debug=0&gc=1", 300), Ok(HeapQuery::default()));
        assert_eq!(
            parse_heap("seconds=5&seconds=7", 300).unwrap().seconds,
            Some(7)
        );
        for bad in [
            "seconds=0",
            "seconds=301",
            "seconds=-1",
            "seconds=1e3",
            "seconds=",
        ] {
            assert!(parse_heap(bad, 300).is_err(), "{bad}");
        }
        assert_eq!(parse_heap("se%63onds=9", 300).unwrap().seconds, Some(9));
        let long = "x".repeat(MAX_QUERY_BYTES + 1);
        assert!(parse_heap(&long, 300).unwrap_err().contains("longer than"));
    }

    /// The fuzz corpus (`fuzz/corpus/http_query/`), replayed as the fuzz
    /// target runs it.
    #[test]
    fn the_fuzz_corpus_replays_cleanly() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus/http_query");
        let mut replayed = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let data = std::fs::read(entry.unwrap().path()).unwrap();
            let text = String::from_utf8_lossy(&data);
            let _ = parse_heap(&text, 300);
            let _ = parse_format(&text, &["json", "html", "pprof"]);
            replayed += 1;
        }
        assert!(replayed > 0);
    }

    #[test]
    fn format_queries() {
        assert_eq!(parse_format("", &["json"]), Ok(FormatQuery::default()));
        assert_eq!(
            parse_format("format=json", &["json"])
                .unwrap()
                .format
                .as_deref(),
            Some("json")
        );
        let err = parse_format("format=xml", &["json"]).unwrap_err();
        assert_eq!(err, "format \"xml\" is not one of: json");
    }
}
