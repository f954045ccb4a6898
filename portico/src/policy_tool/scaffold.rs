//! `portico policy new`: a policy project that builds and passes its fixtures as it is, in
//! Rust (a `cdylib` on `portico-policy-sdk`), Python (`app.py` and the WIT) or JavaScript
//! (`policy.js`, `package.json` and the WIT). The templates are in `scaffold/`.

use std::path::{Component, Path, PathBuf};

use anyhow::{Context as _, bail};

use super::build::Language;
use super::contract;

const README: &str = include_str!("scaffold/README.md");
const FIXTURES: &str = include_str!("scaffold/fixtures.yaml");
const GITIGNORE: &str = include_str!("scaffold/gitignore");
const RUST_MANIFEST: &str = include_str!("scaffold/rust/Cargo.toml.tmpl");
const RUST_LIB: &str = include_str!("scaffold/rust/lib.rs.tmpl");
const PYTHON_APP: &str = include_str!("scaffold/python/app.py");
const JS_POLICY: &str = include_str!("scaffold/js/policy.js");
const JS_PACKAGE: &str = include_str!("scaffold/js/package.json.tmpl");

/// Create the project `name` in a new folder `parent/name` and return that folder.
pub fn new_project(language: Language, name: &str, parent: &Path) -> anyhow::Result<PathBuf> {
    check_name(name)?;
    let dir = parent.join(name);
    if dir.exists() && std::fs::read_dir(&dir).map(|mut entries| entries.next().is_some()).unwrap_or(true) {
        bail!("{} already exists and is not empty", dir.display());
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let fill = |text: &str| text.replace("{{name}}", name).replace("{{language}}", language_title(language));
    let write = |file: &str, text: String| -> anyhow::Result<()> {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    };
    write("README.md", fill(README))?;
    write("fixtures.yaml", fill(FIXTURES))?;
    write(".gitignore", GITIGNORE.to_owned())?;
    match language {
        Language::Rust => {
            let sdk = sdk_dependency(&dir);
            write("Cargo.toml", fill(RUST_MANIFEST).replace("{{sdk}}", &sdk))?;
            write("src/lib.rs", fill(RUST_LIB))?;
        }
        Language::Python => {
            write("app.py", fill(PYTHON_APP))?;
            contract::write_to(&dir.join("wit"))?;
        }
        Language::Js => {
            write("policy.js", fill(JS_POLICY))?;
            write("package.json", fill(JS_PACKAGE))?;
            contract::write_to(&dir.join("wit"))?;
        }
    }
    Ok(dir)
}

fn language_title(language: Language) -> &'static str {
    match language {
        Language::Rust => "Rust",
        Language::Python => "Python",
        Language::Js => "JavaScript",
    }
}

/// Names become crate, package and file names: keep them to what all three accept.
fn check_name(name: &str) -> anyhow::Result<()> {
    let valid = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !valid {
        bail!("`{name}` is not a policy name: use lower-case letters, digits and dashes, starting with a letter");
    }
    Ok(())
}

/// The SDK from the Portico sources this binary was built from, when they are still there
/// (a path dependency, relative when the project is inside them); else the published crate.
fn sdk_dependency(project: &Path) -> String {
    let sources = Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_owned);
    let sdk = sources.as_ref().map(|root| root.join("policy-sdk")).filter(|sdk| sdk.join("Cargo.toml").is_file());
    match sdk {
        Some(sdk) => {
            let path = relative_to(&sdk, project).unwrap_or(sdk);
            format!("portico-policy-sdk = {{ path = {:?} }}", path.display().to_string())
        }
        None => format!("portico-policy-sdk = \"{}\"", env!("CARGO_PKG_VERSION")),
    }
}

/// `target` as a path relative to `from`, when both are absolute.
fn relative_to(target: &Path, from: &Path) -> Option<PathBuf> {
    let from = from.canonicalize().ok()?;
    let target = target.canonicalize().ok()?;
    let common = target.components().zip(from.components()).take_while(|(a, b)| a == b).count();
    if common <= 1 {
        return None;
    }
    let mut path: PathBuf = from.components().skip(common).map(|_| Component::ParentDir).collect();
    path.extend(target.components().skip(common));
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["require-tenant", "a1", "x"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Caps", "1st", "under_score", "trailing-", "../escape", "a b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn relative_paths_climb_to_the_common_folder() {
        let root = std::env::temp_dir().join(format!("portico-scaffold-test-{}", std::process::id()));
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(root.join("c")).unwrap();
        assert_eq!(relative_to(&root.join("c"), &root.join("a/b")), Some(PathBuf::from("../../c")));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
