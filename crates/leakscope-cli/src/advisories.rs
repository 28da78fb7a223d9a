//! `leakscope report --advisory-db PATH`: known advisories for the
//! dependencies a finding's stack or chain passes through.
//!
//! The database is a local copy of the RustSec advisory database
//! (`crates/<name>/RUSTSEC-*.md`, TOML front matter), read by the `rustsec`
//! crate as `cargo audit` reads it (without its git and network features:
//! leakscope never fetches it). An advisory is cited when it is not
//! withdrawn, the version the binary was built with is affected (neither
//! patched nor unaffected), and it can explain memory that grows: a
//! denial-of-service or memory category, or a keyword about memory or
//! resource exhaustion.

use std::path::Path;

use anyhow::{anyhow, Result};
use leakscope_profile::dependencies::AdvisoryCitation;
use leakscope_profile::diagnose::{Finding, SelfCheck};
use rustsec::advisory::Category;
use rustsec::database::Query;
use rustsec::{Advisory, Database, Version};

/// Categories whose advisories can explain a service's memory growth.
const GROWTH_CATEGORIES: [Category; 3] = [
    Category::DenialOfService,
    Category::MemoryExposure,
    Category::MemoryCorruption,
];

/// Words in an advisory's keywords that say memory or resources run out.
const GROWTH_KEYWORDS: [&str; 5] = ["memory", "exhaustion", "oom", "leak", "unbounded"];

/// A local advisory database.
pub struct AdvisoryDb {
    db: Database,
}

impl AdvisoryDb {
    /// Reads the database at `path` (the repository's layout: `crates/`).
    pub fn open(path: &Path) -> Result<AdvisoryDb> {
        Database::open(path)
            .map(|db| AdvisoryDb { db })
            .map_err(|e| anyhow!("advisory database {}: {}", path.display(), one_line(&e)))
    }

    /// The advisories against one version of a package that can explain
    /// memory growth, by id. A version that does not parse has none.
    pub fn growth_advisories(&self, package: &str, version: &str) -> Vec<AdvisoryCitation> {
        let (Ok(name), Ok(version)) = (package.parse(), Version::parse(version)) else {
            return Vec::new();
        };
        // Informational advisories (unsound, unmaintained) are kept: the
        // categories decide.
        let query = Query::new()
            .collection(rustsec::Collection::Crates)
            .withdrawn(false)
            .package_name(name)
            .package_version(version);
        let mut out: Vec<AdvisoryCitation> = self
            .db
            .query(&query)
            .into_iter()
            .filter(|a| explains_growth(a))
            .map(citation)
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }
}

/// Whether an advisory can explain memory that grows.
fn explains_growth(a: &Advisory) -> bool {
    a.metadata
        .categories
        .iter()
        .any(|c| GROWTH_CATEGORIES.contains(c))
        || a.metadata.keywords.iter().any(|k| {
            let k = k.as_str().to_ascii_lowercase();
            GROWTH_KEYWORDS.iter().any(|w| k.contains(w))
        })
}

fn citation(a: &Advisory) -> AdvisoryCitation {
    AdvisoryCitation {
        id: a.metadata.id.as_str().to_string(),
        title: a.metadata.title.clone(),
        patched: a.versions.patched().iter().map(|r| r.to_string()).collect(),
        categories: a
            .metadata
            .categories
            .iter()
            .map(|c| c.name().to_string())
            .collect(),
        url: a.metadata.url.as_ref().map(|u| u.to_string()),
    }
}

/// Cites, in every finding, the advisories against the versions of the
/// dependencies it names, and points its fix at upgrading them.
pub fn cite(db: &AdvisoryDb, check: &mut SelfCheck) {
    for f in &mut check.findings {
        cite_in_finding(db, f);
    }
}

fn cite_in_finding(db: &AdvisoryDb, f: &mut Finding) {
    let mut upgrades = Vec::new();
    for d in &mut f.dependencies {
        let Some(version) = &d.version else {
            continue;
        };
        d.advisories = db.growth_advisories(&d.name, version);
        for a in &d.advisories {
            f.evidence.push(format!(
                "{} {version} is affected by {}: {} ({}); patched: {}",
                d.name,
                a.id,
                a.title,
                a.categories.join(", "),
                patched(a)
            ));
            upgrades.push(format!(
                "upgrade {} from {version} to a patched release ({}; {})",
                d.name,
                patched(a),
                a.id
            ));
        }
    }
    if !upgrades.is_empty() {
        upgrades.dedup();
        f.fix = format!(
            "{}: a known advisory explains this growth. Otherwise: {}",
            upgrades.join("; "),
            f.fix
        );
    }
}

fn patched(a: &AdvisoryCitation) -> String {
    if a.patched.is_empty() {
        "no patched release yet".to_string()
    } else {
        a.patched.join(" or ")
    }
}

/// An error and its causes on one line.
fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database with one package's advisories, each `(id, front matter
    /// after the package line)`.
    fn db(package: &str, advisories: &[(&str, &str)]) -> (tempfile::TempDir, AdvisoryDb) {
        let dir = tempfile::tempdir().unwrap();
        let crate_dir = dir.path().join("crates").join(package);
        std::fs::create_dir_all(&crate_dir).unwrap();
        for (id, rest) in advisories {
            let text = format!(
                "```toml\n[advisory]\nid = \"{id}\"\npackage = \"{package}\"\ndate = \"2023-04-13\"\n{rest}\n```\n\n# Test advisory {id}\n\nWhat it is.\n"
            );
            std::fs::write(crate_dir.join(format!("{id}.md")), text).unwrap();
        }
        let db = AdvisoryDb::open(dir.path()).unwrap();
        (dir, db)
    }

    fn ids(found: &[AdvisoryCitation]) -> Vec<&str> {
        found.iter().map(|a| a.id.as_str()).collect()
    }

    const DOS_PATCHED_0_3_17: &str =
        "categories = [\"denial-of-service\"]\n\n[versions]\npatched = [\">= 0.3.17\"]";

    #[test]
    fn affected_versions_are_cited_patched_ones_are_not() {
        let (_dir, db) = db("h2", &[("RUSTSEC-2023-0034", DOS_PATCHED_0_3_17)]);
        let found = db.growth_advisories("h2", "0.3.16");
        assert_eq!(ids(&found), ["RUSTSEC-2023-0034"]);
        assert_eq!(found[0].patched, [">=0.3.17"]);
        assert_eq!(found[0].categories, ["denial-of-service"]);
        assert_eq!(found[0].title, "Test advisory RUSTSEC-2023-0034");
        assert_eq!(
            ids(&db.growth_advisories("h2", "0.2.7")),
            ["RUSTSEC-2023-0034"]
        );
        assert!(db.growth_advisories("h2", "0.3.17").is_empty());
        assert!(db.growth_advisories("h2", "0.4.0").is_empty());
        // Another package, or a version that is no version: nothing.
        assert!(db.growth_advisories("hyper", "0.3.16").is_empty());
        assert!(db.growth_advisories("h2", "unknown").is_empty());
    }

    #[test]
    fn patched_in_several_lines_and_unaffected_ranges() {
        let (_dir, db) = db(
            "hyper",
            &[(
                "RUSTSEC-2021-0079",
                "categories = [\"memory-exposure\"]\n\n[versions]\npatched = [\">= 0.14.10\", \"^0.13.10\"]\nunaffected = [\"< 0.12.0\"]",
            )],
        );
        let affected = |v: &str| !db.growth_advisories("hyper", v).is_empty();
        assert!(affected("0.14.9"));
        assert!(affected("0.13.9"));
        assert!(affected("0.12.36"));
        assert!(!affected("0.14.10"), "patched");
        assert!(!affected("0.13.10"), "patched on the 0.13 line");
        assert!(!affected("0.11.27"), "unaffected");
        assert!(!affected("1.0.0"));
    }

    #[test]
    fn only_advisories_that_can_explain_growth() {
        let (_dir, db) = db(
            "h2",
            &[
                ("RUSTSEC-2023-0034", DOS_PATCHED_0_3_17),
                // Another kind of flaw, same versions: not about memory.
                (
                    "RUSTSEC-2023-0100",
                    "categories = [\"crypto-failure\"]\n\n[versions]\npatched = [\">= 0.3.17\"]",
                ),
                // No category, but its keywords say what runs out.
                (
                    "RUSTSEC-2023-0101",
                    "keywords = [\"resource-exhaustion\"]\n\n[versions]\npatched = [\">= 0.3.17\"]",
                ),
                // Withdrawn: never cited.
                (
                    "RUSTSEC-2023-0102",
                    "withdrawn = \"2023-05-01\"\ncategories = [\"denial-of-service\"]\n\n[versions]\npatched = []",
                ),
            ],
        );
        assert_eq!(
            ids(&db.growth_advisories("h2", "0.3.16")),
            ["RUSTSEC-2023-0034", "RUSTSEC-2023-0101"]
        );
    }

    #[test]
    fn a_cited_advisory_goes_into_the_evidence_and_the_fix() {
        let (_dir, db) = db("h2", &[("RUSTSEC-2023-0034", DOS_PATCHED_0_3_17)]);
        let dep = |version: &str| leakscope_profile::dependencies::FindingDependency {
            name: "h2".into(),
            version: Some(version.into()),
            advisories: Vec::new(),
        };
        let finding = |version: &str| Finding {
            scenario: "unclassified".into(),
            title: "t".into(),
            confidence: 0.3,
            evidence: Vec::new(),
            fix: "find the holder".into(),
            chain: Vec::new(),
            stack: Vec::new(),
            dependencies: vec![dep(version)],
            claims: Vec::new(),
        };
        let mut f = finding("0.3.16");
        cite_in_finding(&db, &mut f);
        assert_eq!(f.dependencies[0].advisories.len(), 1);
        assert!(
            f.evidence[0].starts_with("h2 0.3.16 is affected by RUSTSEC-2023-0034"),
            "{:?}",
            f.evidence
        );
        assert!(
            f.fix.starts_with(
                "upgrade h2 from 0.3.16 to a patched release (>=0.3.17; RUSTSEC-2023-0034)"
            ),
            "{}",
            f.fix
        );
        assert!(f.fix.ends_with("Otherwise: find the holder"), "{}", f.fix);
        let mut f = finding("0.3.17");
        cite_in_finding(&db, &mut f);
        assert!(f.evidence.is_empty());
        assert_eq!(f.fix, "find the holder");
    }

    #[test]
    fn a_missing_or_malformed_database_is_an_error() {
        let err = AdvisoryDb::open(Path::new("/nonexistent/advisory-db"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.starts_with("advisory database /nonexistent/advisory-db: "),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("crates/h2")).unwrap();
        std::fs::write(
            dir.path().join("crates/h2/RUSTSEC-2023-0034.md"),
            "not an advisory",
        )
        .unwrap();
        let err = AdvisoryDb::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("RUSTSEC-2023-0034.md"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}
