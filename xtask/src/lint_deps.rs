//! `cargo xtask lint-deps`: the dependency policy, checked with `cargo tree`.
//!
//! - `proxy-core` is protocol-agnostic: none of [`CORE_FORBIDDEN`] may appear among its
//!   normal dependencies, direct or transitive.
//! - Frontends ([`FRONTENDS`]) are usable alone: no frontend depends on another one, and
//!   `proxy-cache` depends on none of them.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::process;

/// Protocol, TLS and cache crates that `proxy-core` must not pull in.
const CORE_FORBIDDEN: &[&str] = &[
    "hyper",
    "h2",
    "h3",
    "h3-quinn",
    "quinn",
    "quinn-proto",
    "moka",
    "rustls",
    "tokio-rustls",
];

/// Frontend crates; each one is checked only when its directory exists in the workspace.
const FRONTENDS: &[&str] = &["proxy-http1", "proxy-http2", "proxy-http3"];

/// The cache crate, which must stay independent of every frontend.
const CACHE: &str = "proxy-cache";

/// Runs the checks; `Ok(false)` when the policy is violated.
pub(crate) fn run(args: &[String]) -> Result<bool> {
    if let Some(arg) = args.first() {
        bail!("lint-deps takes no arguments (got `{arg}`)");
    }
    let root = process::workspace_root()?;
    let present = |krate: &str| root.join(krate).join("Cargo.toml").is_file();
    let mut violations = Vec::new();

    let core = normal_deps(&root, "proxy-core")?;
    println!(
        "lint-deps: proxy-core ({} normal dependencies, transitive) must not depend on: {}",
        core.len(),
        CORE_FORBIDDEN.join(", ")
    );
    for forbidden in CORE_FORBIDDEN {
        if core.contains(*forbidden) {
            violations.push(violation(&root, "proxy-core", forbidden));
        }
    }

    let frontends: Vec<&str> = FRONTENDS.iter().copied().filter(|f| present(f)).collect();
    let skipped: Vec<&str> = FRONTENDS.iter().copied().filter(|f| !present(f)).collect();
    if !skipped.is_empty() {
        println!(
            "lint-deps: not in the workspace, skipped: {}",
            skipped.join(", ")
        );
    }
    for frontend in &frontends {
        let others: Vec<&str> = FRONTENDS
            .iter()
            .copied()
            .filter(|o| o != frontend)
            .collect();
        println!(
            "lint-deps: {frontend} must not depend on: {}",
            others.join(", ")
        );
        let deps = normal_deps(&root, frontend)?;
        for other in others {
            if deps.contains(other) {
                violations.push(violation(&root, frontend, other));
            }
        }
    }

    if present(CACHE) {
        println!(
            "lint-deps: {CACHE} must not depend on: {}",
            FRONTENDS.join(", ")
        );
        let deps = normal_deps(&root, CACHE)?;
        for frontend in FRONTENDS {
            if deps.contains(*frontend) {
                violations.push(violation(&root, CACHE, frontend));
            }
        }
    } else {
        println!("lint-deps: {CACHE} not in the workspace, skipped");
    }

    if violations.is_empty() {
        println!("lint-deps: ok");
        return Ok(true);
    }
    for message in &violations {
        eprintln!("lint-deps: FAIL: {message}");
    }
    eprintln!("lint-deps: {} violation(s)", violations.len());
    Ok(false)
}

/// Names of the packages in `krate`'s normal dependency tree, without `krate` itself.
fn normal_deps(root: &Path, krate: &str) -> Result<BTreeSet<String>> {
    let output = process::cargo()?
        .args(["tree", "-p", krate, "-e", "normal", "--prefix", "none"])
        .current_dir(root)
        .output()
        .with_context(|| format!("running cargo tree -p {krate}"))?;
    if !output.status.success() {
        bail!(
            "cargo tree -p {krate} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let text = String::from_utf8(output.stdout).context("cargo tree printed non-UTF-8")?;
    Ok(package_names(&text))
}

/// Package names in `cargo tree --prefix none` output: one package per line,
/// `name vX.Y.Z [(path)] [(*)]`; the first line is the root and is left out.
fn package_names(tree: &str) -> BTreeSet<String> {
    tree.lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Describes `krate -> dependency` with the paths that lead there (`cargo tree -i`).
fn violation(root: &Path, krate: &str, dependency: &str) -> String {
    let paths = process::cargo().ok().and_then(|mut command| {
        command
            .args(["tree", "-p", krate, "-e", "normal", "-i", dependency])
            .current_dir(root)
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
    });
    match paths {
        Some(tree) => format!("{krate} depends on {dependency}; inverted tree:\n{tree}"),
        None => format!("{krate} depends on {dependency}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cargo_tree_output() {
        let tree = "proxy-core v0.1.0 (/w/proxy-core)\nhyper v1.12.0\nbytes v1.12.2\n\
                    rustversion v1.0.23 (proc-macro)\nhttp v1.5.0 (*)\n";
        let names = package_names(tree);
        assert!(names.contains("hyper") && names.contains("http") && names.contains("rustversion"));
        assert!(!names.contains("proxy-core"));
    }
}
