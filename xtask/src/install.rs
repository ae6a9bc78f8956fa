//! `cargo xtask install [--root DIR]`: the binaries, the systemd unit, the example
//! config, man pages and shell completions, where a Debian host looks for them.
use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

/// One file to install: from, to (relative to the root), mode, and whether an existing
/// file is kept (an operator's config is never overwritten).
#[derive(Debug, PartialEq, Eq)]
pub struct Item {
    pub from: PathBuf,
    pub to: PathBuf,
    pub mode: u32,
    pub keep_existing: bool,
}

/// What goes where. `release`: the built binaries; `docs`: what watchdog-gen-docs wrote;
/// `repo`: the workspace.
pub fn plan(release: &Path, docs: &Path, repo: &Path) -> Vec<Item> {
    let item = |from: PathBuf, to: &str, mode: u32| Item {
        from,
        to: PathBuf::from(to),
        mode,
        keep_existing: false,
    };
    let mut v = vec![
        item(release.join("watchdog"), "usr/local/bin/watchdog", 0o755),
        // /usr/local/bin comes before util-linux's /usr/bin/wdctl on PATH; ours points
        // its users there.
        item(release.join("wdctl"), "usr/local/bin/wdctl", 0o755),
        item(
            repo.join("packaging/watchdog.service"),
            "etc/systemd/system/watchdog.service",
            0o644,
        ),
        item(
            repo.join("watchdog/watchdog.example.toml"),
            "etc/watchdog/watchdog.example.toml",
            0o644,
        ),
        Item {
            keep_existing: true,
            ..item(
                repo.join("watchdog/watchdog.example.toml"),
                "etc/watchdog/watchdog.toml",
                0o600,
            )
        },
    ];
    for bin in ["watchdog", "wdctl"] {
        v.push(item(
            docs.join(format!("man8/{bin}.8")),
            &format!("usr/local/share/man/man8/{bin}.8"),
            0o644,
        ));
        v.push(item(
            docs.join(format!("completions/{bin}.bash")),
            &format!("usr/local/share/bash-completion/completions/{bin}"),
            0o644,
        ));
        v.push(item(
            docs.join(format!("completions/_{bin}")),
            &format!("usr/local/share/zsh/site-functions/_{bin}"),
            0o644,
        ));
        v.push(item(
            docs.join(format!("completions/{bin}.fish")),
            &format!("usr/local/share/fish/vendor_completions.d/{bin}.fish"),
            0o644,
        ));
    }
    v
}

/// Copy every item of `plan` under `root`.
pub fn run(plan: &[Item], root: &Path) -> anyhow::Result<()> {
    for it in plan {
        let dest = root.join(&it.to);
        if it.keep_existing && dest.exists() {
            println!("kept      {}", dest.display());
            continue;
        }
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        // Into a temporary name, then renamed: a running binary is replaced, not
        // overwritten in place.
        let mut tmp = dest.clone().into_os_string();
        tmp.push(".xtask-new");
        let tmp = PathBuf::from(tmp);
        std::fs::copy(&it.from, &tmp)
            .with_context(|| format!("copying {} to {}", it.from.display(), tmp.display()))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(it.mode))?;
        std::fs::rename(&tmp, &dest).with_context(|| format!("installing {}", dest.display()))?;
        println!("installed {}", dest.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_covers_binaries_unit_config_man_pages_and_completions_and_keeps_the_config() {
        let p = plan(Path::new("/r"), Path::new("/d"), Path::new("/w"));
        let to: Vec<&str> = p.iter().map(|i| i.to.to_str().unwrap()).collect();
        for want in [
            "usr/local/bin/watchdog",
            "usr/local/bin/wdctl",
            "etc/systemd/system/watchdog.service",
            "etc/watchdog/watchdog.toml",
            "usr/local/share/man/man8/wdctl.8",
            "usr/local/share/bash-completion/completions/wdctl",
            "usr/local/share/zsh/site-functions/_watchdog",
            "usr/local/share/fish/vendor_completions.d/wdctl.fish",
        ] {
            assert!(to.contains(&want), "{want} missing: {to:?}");
        }
        let config = p.iter().find(|i| i.to.ends_with("watchdog.toml")).unwrap();
        assert!(config.keep_existing && config.mode == 0o600);
    }

    #[test]
    fn an_existing_config_is_kept_and_files_get_their_modes() {
        let base = std::env::temp_dir().join(format!("xtask-install-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let src = base.join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("bin"), "new binary").unwrap();
        std::fs::write(src.join("conf"), "example").unwrap();
        let root = base.join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/w.toml"), "mine").unwrap();
        let plan = [
            Item {
                from: src.join("bin"),
                to: "usr/bin/w".into(),
                mode: 0o755,
                keep_existing: false,
            },
            Item {
                from: src.join("conf"),
                to: "etc/w.toml".into(),
                mode: 0o600,
                keep_existing: true,
            },
        ];
        run(&plan, &root).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("etc/w.toml")).unwrap(),
            "mine"
        );
        let meta = std::fs::metadata(root.join("usr/bin/w")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o755);
        std::fs::remove_dir_all(&base).unwrap();
    }
}
