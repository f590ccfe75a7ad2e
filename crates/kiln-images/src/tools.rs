//! The host programs a build needs, checked before anything is built, so a missing one stops
//! the build with one line naming the Debian package and the command that installs it.

use std::process::{Command, Stdio};

use crate::{ImageSpec, ImagesError, BASE};

/// A host program a build step runs, and the Debian package that provides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tool {
    /// The program (`debootstrap`) or capability (`pip`) looked for.
    pub program: &'static str,
    /// The Debian/Ubuntu package that installs it.
    pub package: &'static str,
}

/// Talks to the Docker engine: every build needs it.
pub const DOCKER: Tool = Tool {
    program: "docker",
    package: "docker.io",
};
const DEBOOTSTRAP: Tool = Tool {
    program: "debootstrap",
    package: "debootstrap",
};
const PIP: Tool = Tool {
    program: "pip",
    package: "python3-pip",
};

/// The tools building `spec` needs (beyond [`DOCKER`]).
pub fn tools_for(spec: &ImageSpec) -> Vec<Tool> {
    if spec.name == BASE {
        vec![DEBOOTSTRAP]
    } else if spec.dir.join("requirements.txt").exists() {
        vec![PIP]
    } else {
        Vec::new()
    }
}

/// Fails with [`ImagesError::MissingTool`] when `tool` is not on this host.
pub fn require(tool: Tool) -> Result<(), ImagesError> {
    let present = match tool.program {
        "pip" => Command::new("python3")
            .args(["-m", "pip", "--version"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success()),
        program => on_path(program),
    };
    if present {
        Ok(())
    } else {
        Err(ImagesError::MissingTool {
            program: tool.program,
            package: tool.package,
        })
    }
}

/// True when `program` is an executable file in a PATH directory (where the build looks).
fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .any(|p| std::fs::metadata(&p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_names_its_package_and_the_install_command_on_one_line() {
        let err = require(Tool {
            program: "kiln-no-such-program",
            package: "kiln-no-such-package",
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("`kiln-no-such-program`"), "{err}");
        assert!(err.contains("apt-get install kiln-no-such-package"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
        require(Tool {
            program: "sh",
            package: "dash",
        })
        .expect("sh is there");
    }
}
