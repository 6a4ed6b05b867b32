//! The workspace keeps its shape: the core has no proxy-wasm anywhere in its dependency tree (so
//! another shell can reuse it), no module of the core imports one that imports it back, and no
//! product source file grows past 600 lines (tests excluded).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Each package of Cargo.lock (by name, and by "name version" where several versions are locked)
/// with the packages it depends on.
fn locked_dependencies() -> BTreeMap<String, Vec<String>> {
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).expect("Cargo.lock");
    let mut packages = BTreeMap::new();
    for block in lock.split("[[package]]").skip(1) {
        let field = |name: &str| {
            block
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name} = \"")))
                .map(|v| v.trim_end_matches('"').to_string())
        };
        let (Some(name), Some(version)) = (field("name"), field("version")) else {
            continue;
        };
        let dependencies: Vec<String> = block
            .split_once("dependencies = [")
            .map(|(_, rest)| rest.split(']').next().unwrap_or_default())
            .unwrap_or_default()
            .lines()
            .map(|l| l.trim().trim_end_matches(',').trim_matches('"').to_string())
            .filter(|l| !l.is_empty())
            .collect();
        packages.insert(format!("{name} {version}"), dependencies.clone());
        packages.entry(name).or_insert(dependencies);
    }
    packages
}

#[test]
fn the_core_has_no_proxy_wasm_in_its_dependency_tree() {
    let packages = locked_dependencies();
    assert!(
        packages.contains_key("obo-core"),
        "obo-core is in Cargo.lock"
    );
    let mut seen = BTreeSet::new();
    let mut next = vec!["obo-core".to_string()];
    while let Some(name) = next.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        next.extend(packages.get(&name).cloned().unwrap_or_default());
    }
    assert!(
        seen.iter().any(|p| p.starts_with("sha2")),
        "the walk reaches the core's own dependencies: {seen:?}"
    );
    let proxy: Vec<_> = seen
        .iter()
        .filter(|p| p.starts_with("proxy-wasm"))
        .collect();
    assert!(proxy.is_empty(), "the core depends on {proxy:?}");
}

/// The product source of a file: everything before its test module.
fn product_lines(text: &str) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().collect();
    let end = lines
        .windows(2)
        .position(|w| w[0].trim() == "#[cfg(test)]" && w[1].trim_start().starts_with("mod "))
        .unwrap_or(lines.len());
    lines[..end].to_vec()
}

/// The product files of the core and the two shells: their source minus the testing module and
/// the test files.
fn core_product_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("a source folder") {
            let path = entry.expect("an entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if name != "testing" && name != "tests" {
                    walk(&path, out);
                }
            } else if name.ends_with(".rs") && name != "tests.rs" {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&root().join("core/src"), &mut files);
    walk(&root().join("wasm/src"), &mut files);
    walk(&root().join("native/src"), &mut files);
    files.sort();
    files
}

#[test]
fn no_product_source_file_is_over_600_lines() {
    let files = core_product_files();
    assert!(files.len() > 20, "the core's sources are found: {files:?}");
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = product_lines(&std::fs::read_to_string(f).unwrap()).len();
            (n > 600).then(|| format!("{} ({n} lines)", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "split these: {long:?}");
}

#[test]
fn no_module_of_the_core_imports_one_that_imports_it_back() {
    let src = root().join("core/src");
    // Top-level module -> the top-level modules its product code names as `crate::<module>`.
    let mut imports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in core_product_files() {
        let Ok(relative) = file.strip_prefix(&src) else {
            continue;
        };
        let module = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if module == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let named = imports.entry(module.clone()).or_default();
        for line in product_lines(&text) {
            for part in line.split("crate::").skip(1) {
                let name: String = part
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != module {
                    named.insert(name);
                }
            }
        }
    }
    assert!(
        imports.len() > 20,
        "the core's modules are found: {imports:?}"
    );
    let reaches = |from: &str, to: &str| {
        let mut seen = BTreeSet::new();
        let mut next = vec![from.to_string()];
        while let Some(m) = next.pop() {
            if m == to {
                return true;
            }
            if seen.insert(m.clone()) {
                next.extend(imports.get(&m).cloned().unwrap_or_default());
            }
        }
        false
    };
    let cycles: Vec<String> = imports
        .iter()
        .flat_map(|(m, named)| named.iter().map(move |n| (m.clone(), n.clone())))
        .filter(|(m, n)| reaches(n, m))
        .map(|(m, n)| format!("{m} -> {n}"))
        .collect();
    assert!(cycles.is_empty(), "import cycles: {cycles:?}");
}
