//! Finding tansu for the harness, installing it on a machine that has none.
//!
//! The decision is `scripts/install-tansu`'s, the same script `.ci/run` calls, so there is one
//! install path: it prints `$TANSU`, else `tansu` on `PATH`, else `~/.cargo/bin/tansu`, else it
//! installs tansu 0.6.0 there with `cargo install` (about 15 minutes on 2 cores, once per
//! machine; concurrent callers wait on its lock file) and prints that. The tests below run the
//! script for real against a fake `PATH`, home and `cargo`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The tansu binary, looked up (and installed, if need be) once per test process.
pub fn binary() -> &'static Path {
    static TANSU: OnceLock<PathBuf> = OnceLock::new();
    TANSU.get_or_init(|| find_or_install(&mut Command::new(script())))
}

/// `scripts/install-tansu` in this checkout.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-tansu")
}

/// Runs the script; its messages (the install notice, cargo's progress) go straight to the
/// terminal, past the test harness's output capture, so a 15-minute wait is explained.
fn find_or_install(script: &mut Command) -> PathBuf {
    let out = script
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .expect("running scripts/install-tansu");
    assert!(
        out.status.success(),
        "scripts/install-tansu failed ({}); its messages are above",
        out.status
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// A sandbox for the script: a `PATH` holding only the tools it needs (so no real tansu is
/// found), a home of its own, and a fake `cargo` that logs its arguments and "installs" a
/// tansu after a second.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let sandbox = Sandbox {
            dir: tempfile::tempdir().unwrap(),
        };
        let tools = sandbox.path("tools");
        std::fs::create_dir_all(&tools).unwrap();
        for tool in ["mkdir", "flock", "chmod", "sleep"] {
            std::os::unix::fs::symlink(which(tool), tools.join(tool)).unwrap();
        }
        let cargo = format!(
            "#!{bash}\necho \"$*\" >>{log}\nsleep 1\nroot=\"${{@: -1}}\"\n\
             mkdir -p \"$root/bin\"\necho '#!/bin/sh' >\"$root/bin/tansu\"\nchmod +x \"$root/bin/tansu\"\n",
            bash = which("bash").display(),
            log = sandbox.path("cargo.log").display(),
        );
        sandbox.executable("cargo", &cargo);
        sandbox
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes an executable file at `rel`.
    fn executable(&self, rel: &str, text: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// The script with this sandbox's environment, plus `PATH` entries `path` (relative).
    fn script(&self, path: &[&str]) -> Command {
        let dirs: Vec<PathBuf> = path.iter().map(|p| self.path(p)).collect();
        let path = std::env::join_paths(dirs.iter().chain([&self.path("tools")])).unwrap();
        let mut command = Command::new(which("bash"));
        command
            .arg(script())
            .env_clear()
            .env("PATH", path)
            .env("HOME", self.path("home"))
            .env("CARGO", self.path("cargo"));
        command
    }

    /// The script's stdout, asserting it succeeded.
    fn run(&self, command: &mut Command) -> String {
        let out = command.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The fake cargo's invocations.
    fn cargo_calls(&self) -> Vec<String> {
        let log = std::fs::read_to_string(self.path("cargo.log")).unwrap_or_default();
        log.lines().map(str::to_owned).collect()
    }
}

/// `name` on the real `PATH`.
fn which(name: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not on PATH"))
}

#[test]
fn tansu_is_looked_up_in_tansu_then_path_then_cargo_home_and_never_reinstalled() {
    let s = Sandbox::new();
    let env = s.executable("env/tansu", "#!/bin/sh\n");
    let on_path = s.executable("bin/tansu", "#!/bin/sh\n");
    let home = s.executable("home/.cargo/bin/tansu", "#!/bin/sh\n");
    let cargo_home = s.executable("cargo-home/bin/tansu", "#!/bin/sh\n");
    let found = |command: &mut Command| PathBuf::from(s.run(command).trim());

    assert_eq!(found(s.script(&["bin"]).env("TANSU", &env)), env);
    assert_eq!(found(&mut s.script(&["bin"])), on_path);
    assert_eq!(found(&mut s.script(&[])), home);
    let cargo_home_dir = s.path("cargo-home");
    assert_eq!(
        found(s.script(&[]).env("CARGO_HOME", &cargo_home_dir)),
        cargo_home
    );
    assert_eq!(s.cargo_calls(), Vec::<String>::new(), "nothing installed");
}

#[test]
fn a_missing_tansu_is_installed_once_into_cargo_home_even_by_concurrent_callers() {
    let s = Sandbox::new();
    let callers: Vec<_> = (0..3)
        .map(|_| {
            s.script(&[])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<_> = callers
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let installed = s.path("home/.cargo/bin/tansu");
    for out in &outputs {
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()),
            installed
        );
    }
    let root = s.path("home/.cargo");
    assert_eq!(
        s.cargo_calls(),
        [format!(
            "install tansu --version 0.6.0 --locked --features dynostore,libsql --root {}",
            root.display()
        )],
        "one install, with the pinned version and features"
    );
    let notices: String = outputs
        .iter()
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        .collect();
    assert!(notices.contains("about 15 minutes on 2 cores"), "{notices}");
    // The harness takes the same path: the script's answer, now without installing.
    assert_eq!(find_or_install(&mut s.script(&[])), installed);
    assert_eq!(s.cargo_calls().len(), 1);
}
