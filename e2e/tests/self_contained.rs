//! The repository stands alone: no tracked file reads or names a path outside it. A path into a
//! folder beside the checkout works only where that folder happens to exist, so a clone with
//! nothing beside it would fail where this one passes.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .canonicalize()
        .expect("the repository's folder")
}

fn tracked_files(root: &Path) -> Vec<PathBuf> {
    let out = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["ls-files", "-z"])
        .output()
        .expect("git ls-files");
    assert!(out.status.success(), "git ls-files failed");
    out.stdout
        .split(|&b| b == 0)
        .filter(|name| !name.is_empty())
        .map(|name| PathBuf::from(String::from_utf8_lossy(name).into_owned()))
        .collect()
}

/// How many `../` steps each run of them in `text` takes.
fn parent_steps(text: &str) -> Vec<usize> {
    let mut steps = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("../") {
        let run = rest.as_bytes()[at..]
            .chunks(3)
            .take_while(|chunk| *chunk == b"../")
            .count();
        // Not the tail of a longer run (`x/../..`), nor part of a word (`a../`).
        let before = rest[..at].chars().next_back();
        if before.is_none_or(|c| c != '.') {
            steps.push(run);
        }
        rest = &rest[at + 3 * run..];
    }
    steps
}

#[test]
fn no_tracked_file_names_a_path_outside_the_repository() {
    let root = root();
    let parent = root.parent().expect("the repository has a parent folder");
    let own_name = root.file_name().unwrap().to_string_lossy().into_owned();
    // The folders beside this checkout: a path into one of them works here and nowhere else.
    let siblings: Vec<String> = std::fs::read_dir(parent)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| *name != own_name)
                .collect()
        })
        .unwrap_or_default();
    let parent_prefix = format!("{}/", parent.display());
    let mut problems = Vec::new();
    for file in tracked_files(&root) {
        let Ok(text) = std::fs::read_to_string(root.join(&file)) else {
            continue;
        };
        let depth = file.parent().map_or(0, |dir| dir.components().count());
        if let Some(steps) = parent_steps(&text).into_iter().find(|&s| s > depth) {
            problems.push(format!(
                "{}: a path {steps} folder(s) up, above the repository",
                file.display()
            ));
        }
        for sibling in &siblings {
            let named = text.match_indices(&format!("../{sibling}")).any(|(at, m)| {
                let after = text[at + m.len()..].chars().next();
                after.is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '-' || c == '.'))
            });
            if named {
                problems.push(format!(
                    "{}: names ../{sibling}, a folder beside the repository",
                    file.display()
                ));
            }
        }
        if parent != Path::new("/") && text.contains(&parent_prefix) {
            problems.push(format!(
                "{}: names {parent_prefix}, outside the repository",
                file.display()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn runs_of_parent_steps_are_counted() {
    // Written with `up`, so that this file does not name such paths itself.
    let up = "../";
    assert_eq!(parent_steps(&format!("{{}}/{up}elsewhere/x")), vec![1]);
    assert_eq!(
        parent_steps(&format!("{up}{up}envoy and ./x/{up}y")),
        vec![2, 1]
    );
    assert_eq!(parent_steps("a.../b"), Vec::<usize>::new());
}

/// GitHub's anchor for a heading: lowercase, spaces as dashes, other punctuation dropped.
fn anchor_of(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn every_link_between_documents_leads_to_a_file_and_heading_that_exist() {
    let root = root();
    let mut problems = Vec::new();
    let documents = tracked_files(&root)
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "md"));
    for document in documents {
        let text = std::fs::read_to_string(root.join(&document)).unwrap_or_default();
        let dir = document.parent().unwrap_or(Path::new(""));
        for (at, _) in text.match_indices("](") {
            let target = &text[at + 2..];
            let Some(end) = target.find(')') else {
                continue;
            };
            let link = &target[..end];
            if link.contains("://") || link.starts_with("mailto:") || link.contains(' ') {
                continue;
            }
            let (path, anchor) = link.split_once('#').unwrap_or((link, ""));
            let file = if path.is_empty() {
                root.join(&document)
            } else {
                root.join(dir).join(path)
            };
            let Ok(linked) = std::fs::read_to_string(&file) else {
                problems.push(format!("{}: {link}: no such file", document.display()));
                continue;
            };
            let headings: Vec<String> = linked
                .lines()
                .filter_map(|l| {
                    l.trim_start_matches('#')
                        .strip_prefix(' ')
                        .filter(|_| l.starts_with('#'))
                })
                .map(anchor_of)
                .collect();
            if !anchor.is_empty() && !headings.iter().any(|h| h == anchor) {
                problems.push(format!("{}: {link}: no such heading", document.display()));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
