//! The project's own documents are complete in a clone: every relative link in its markdown
//! resolves to a file inside the repository (none points at a document beside it that users do
//! not have), and the README leads to the architecture page.

use std::path::{Path, PathBuf};

/// The markdown files a clone ships: README, docs/, bench/, docker/, config/, schemas/.
fn markdown_files(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![root.join("README.md")];
    for dir in ["docs", "bench", "docker", "config", "schemas"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files
}

/// The targets of the inline links `[text](target)` in `text`, without `#anchors`.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("](") {
        rest = &rest[start + 2..];
        let Some(end) = rest.find(')') else { break };
        let target = rest[..end].split('#').next().unwrap_or_default().trim();
        if !target.is_empty() && !target.contains("://") && !target.starts_with("mailto:") {
            targets.push(target.to_string());
        }
        rest = &rest[end..];
    }
    targets
}

#[test]
fn every_relative_link_in_the_docs_resolves_inside_the_repository() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .canonicalize()
        .unwrap();
    let mut broken = Vec::new();
    for file in markdown_files(&root) {
        let text = std::fs::read_to_string(&file).unwrap();
        let dir = file.parent().unwrap();
        for target in link_targets(&text) {
            let resolved = dir.join(&target).canonicalize();
            match resolved {
                Ok(path) if path.starts_with(&root) => {}
                Ok(path) => broken.push(format!(
                    "{}: {target} leaves the repository ({})",
                    file.display(),
                    path.display()
                )),
                Err(_) => broken.push(format!("{}: {target} does not exist", file.display())),
            }
        }
    }
    assert!(
        broken.is_empty(),
        "links a clone cannot follow:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_readme_leads_to_the_architecture_page() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(
        readme.contains("](docs/architecture.md)"),
        "README lacks the link"
    );
    let page = std::fs::read_to_string(root.join("docs/architecture.md")).unwrap();
    for section in [
        "contract",
        "Data flow",
        "Module map",
        "Adding a source or a sink",
    ] {
        assert!(
            page.to_lowercase().contains(&section.to_lowercase()),
            "docs/architecture.md lacks `{section}`"
        );
    }
}
