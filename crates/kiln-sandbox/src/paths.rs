//! Path hygiene for anything that crosses the sandbox boundary.

/// Normalises a relative path (`./a//b/` → `a/b`); refuses absolute paths, `..`, NUL and empty.
pub fn clean_relative(path: &str) -> Result<String, String> {
    if path.contains('\0') {
        return Err(format!("{path:?}: NUL in path"));
    }
    if path.starts_with('/') {
        return Err(format!("{path:?}: absolute path"));
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(format!("{path:?}: `..` in path")),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(format!("{path:?}: empty path"));
    }
    Ok(parts.join("/"))
}

/// True when a symlink at `link_path` (relative to the root) pointing at `target` stays inside
/// the root: the target is relative and never climbs above the root while resolving.
pub fn symlink_stays_inside(link_path: &str, target: &str) -> bool {
    if target.is_empty() || target.starts_with('/') || target.contains('\0') {
        return false;
    }
    let mut depth: Vec<&str> = link_path.split('/').collect();
    depth.pop(); // the link's own name
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if depth.pop().is_none() {
                    return false;
                }
            }
            p => depth.push(p),
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning() {
        assert_eq!(clean_relative("./a//b/").unwrap(), "a/b");
        assert!(clean_relative("/etc/passwd").is_err());
        assert!(clean_relative("a/../../b").is_err());
        assert!(clean_relative(".").is_err());
    }

    #[test]
    fn symlinks() {
        assert!(symlink_stays_inside("a/link", "b"));
        assert!(symlink_stays_inside("a/link", "../b"));
        assert!(!symlink_stays_inside("a/link", "../../b"));
        assert!(!symlink_stays_inside("link", "/"));
        assert!(!symlink_stays_inside("link", "/etc/passwd"));
        assert!(!symlink_stays_inside("link", ".."));
    }
}
