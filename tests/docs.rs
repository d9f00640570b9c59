//! The documentation against the code: every job key the parser accepts is in
//! docs/configuration.md and no documented key is unknown; every relative link (and its
//! `#anchor`) in README, DESIGN, CHANGELOG, docs/ and tests/README resolves; README stays about
//! a page; every command's `--help` has an example. No broker needed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Markdown outside fenced code blocks.
fn prose(md: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in md.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The keys documented: the first cell of table rows that is one backticked dotted word.
fn documented_keys(md: &str) -> BTreeSet<String> {
    prose(md)
        .lines()
        .filter_map(|l| {
            let cell = l.trim().strip_prefix('|')?.split('|').next()?.trim();
            let key = cell.strip_prefix('`')?.strip_suffix('`')?;
            key.chars()
                .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.')
                .then(|| key.to_string())
        })
        .collect()
}

#[test]
fn every_job_key_is_documented_and_every_documented_key_exists() {
    let parser: BTreeSet<String> = sluice::config::job_keys().into_iter().collect();
    assert!(
        parser.contains("source.brokers") && parser.contains("schema.registry.ca_file"),
        "the parser's keys were not read: {parser:?}"
    );
    let documented = documented_keys(&read(&repo().join("docs/configuration.md")));
    let missing: Vec<&String> = parser.difference(&documented).collect();
    let unknown: Vec<&String> = documented.difference(&parser).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "docs/configuration.md: undocumented keys {missing:?}; documented keys the parser does not accept {unknown:?}"
    );
}

#[test]
fn the_key_check_sees_a_key_missing_from_a_reference() {
    let doc = "| key | type |\n| --- | --- |\n| `source.brokers` | string |\n```\n| `in.code` | x |\n```\n";
    assert_eq!(
        documented_keys(doc),
        BTreeSet::from(["source.brokers".to_string()])
    );
}

/// GitHub's anchor of a heading: lowercased; letters, digits, spaces, `-` and `_` kept;
/// spaces made `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(md: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut out = BTreeSet::new();
    for l in prose(md).lines() {
        let Some(h) = l.strip_prefix('#') else {
            continue;
        };
        let s = slug(h.trim_start_matches('#'));
        // A repeated heading gets `-1`, `-2`… on GitHub.
        let mut n = 0;
        let mut candidate = s.clone();
        while !seen.insert(candidate.clone()) {
            n += 1;
            candidate = format!("{s}-{n}");
        }
        out.insert(candidate);
    }
    out
}

/// `(target, line)` of each inline link `[text](target)` outside code.
fn links(md: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for (n, line) in prose(md).lines().enumerate() {
        // Inline code spans may hold `](`: leave them out.
        let mut plain = String::new();
        let mut code = false;
        for c in line.chars() {
            if c == '`' {
                code = !code;
            } else if !code {
                plain.push(c);
            }
        }
        let mut rest = plain.as_str();
        while let Some(at) = rest.find("](") {
            let tail = &rest[at + 2..];
            let end = tail.find(')').unwrap_or(tail.len());
            out.push((tail[..end].trim().to_string(), n + 1));
            rest = &tail[end..];
        }
    }
    out
}

fn markdown_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = ["README.md", "DESIGN.md", "CHANGELOG.md", "tests/README.md"]
        .iter()
        .map(|f| repo().join(f))
        .collect();
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in markdown_files() {
        let md = read(&file);
        for (target, line) in links(&md) {
            if target.starts_with("http://")
                || target.starts_with("https://")
                || target.starts_with("mailto:")
            {
                continue;
            }
            checked += 1;
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let dest = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            let at = format!(
                "{}:{line}: ({target})",
                file.strip_prefix(repo()).unwrap().display()
            );
            if !dest.exists() {
                broken.push(format!("{at}: no such file"));
                continue;
            }
            if let Some(a) = anchor {
                if dest.extension().is_some_and(|x| x == "md") && !anchors(&read(&dest)).contains(a)
                {
                    broken.push(format!("{at}: no heading with that anchor"));
                }
            }
        }
    }
    assert!(
        checked > 10,
        "only {checked} links found: the link reader is broken"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_link_check_sees_a_broken_link_and_anchor() {
    let md = "# Schema evolution\n\nSee [x](#schema-evolution), [y](#nope) and `[z](#code)`.\n";
    let got = links(md);
    assert_eq!(
        got,
        [
            ("#schema-evolution".to_string(), 3),
            ("#nope".to_string(), 3)
        ]
    );
    let a = anchors(md);
    assert!(a.contains("schema-evolution") && !a.contains("nope"));
    assert_eq!(
        slug("Kafka: transactions, compacted topics"),
        "kafka-transactions-compacted-topics"
    );
}

#[test]
fn readme_is_about_a_page_and_names_the_two_commands() {
    let readme = read(&repo().join("README.md"));
    assert!(
        readme.len() < 10_000,
        "README.md is {} bytes: reference goes to docs/",
        readme.len()
    );
    assert!(readme.contains("make demo") && readme.contains("make test"));
    assert!(
        readme.contains("sluice init"),
        "the quickstart starts from sluice init"
    );
}

#[test]
fn every_command_help_has_an_example() {
    let sluice = env!("CARGO_BIN_EXE_sluice");
    let help = Command::new(sluice).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout).to_string();
    let commands: Vec<String> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() >= 12, "{help}");
    for c in commands {
        let out = Command::new(sluice).args([&c, "--help"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("Example") && text.contains(&format!("sluice {c}")),
            "`sluice {c} --help` has no example:\n{text}"
        );
    }
}
